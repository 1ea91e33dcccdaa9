"""Long-convolution kernels: the torch FFT reference and the Triton backend behind one switch."""

from .cpu import cpu_supports_bf16
from .fftconv import BACKENDS, fft_size, fftconv, fftconv2d

__all__ = ["BACKENDS", "cpu_supports_bf16", "fft_size", "fftconv", "fftconv2d"]
