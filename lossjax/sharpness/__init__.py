"""lossjax.sharpness"""
