"""lossjax.scaling"""
