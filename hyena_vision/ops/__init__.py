"""Long-convolution kernels: the torch FFT reference and the Triton backend behind one switch."""

from .fftconv import BACKENDS, fft_size, fftconv, fftconv2d

__all__ = ["BACKENDS", "fft_size", "fftconv", "fftconv2d"]
