"""SR metrics: PSNR/SSIM on MATLAB ``rgb2ycbcr`` Y with the scale cropped (see :mod:`.psnr_ssim`)."""

from binsr.metrics.psnr_ssim import crop_border, psnr_y, ssim_y, to_uint8, to_y_channel

__all__ = ["crop_border", "psnr_y", "ssim_y", "to_uint8", "to_y_channel"]
