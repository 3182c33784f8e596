"""lossjax.losses"""
