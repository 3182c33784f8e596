"""lossjax.kernels"""
