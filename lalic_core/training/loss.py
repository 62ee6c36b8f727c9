"""The rate-distortion loss of the official LALIC training: CompressAI's
``RateDistortionLoss`` (``lambda * 255^2 * MSE + bpp``, or ``lambda * (1 - MS-SSIM) + bpp``,
bpp = ``-sum(log2 likelihoods) / (B * H * W)`` over y and z), with two additions: bpp can be
counted over another number of pixels (the original pixels of a padded validation image),
and the MSE is always reported (for PSNR)."""
from __future__ import annotations

import math

import torch
from compressai.losses import RateDistortionLoss as _CompressAIRateDistortionLoss
from torch import nn

__all__ = ["METRICS", "RateDistortionLoss", "psnr_from_mse"]

METRICS = ("mse", "ms-ssim")


class RateDistortionLoss(_CompressAIRateDistortionLoss):
    """``forward(output, target, num_pixels=None)``: output ``{"x_hat": (B, 3, H, W),
    "likelihoods": {...}}``, target (B, 3, H, W) -> dict of 0-d tensors ``loss``, ``bpp``,
    ``mse`` (and ``ms_ssim`` for ``metric="ms-ssim"``). ``num_pixels`` (default B * H * W)
    is what bpp is counted over."""

    def __init__(self, lmbda: float, metric: str = "mse"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        super().__init__(lmbda=float(lmbda), metric=metric)
        self.lmbda, self.metric_name = float(lmbda), metric

    def forward(self, output: dict, target: torch.Tensor, num_pixels: int | None = None
                ) -> dict[str, torch.Tensor]:
        rd = super().forward(output, target)
        bpp = rd["bpp_loss"]
        if num_pixels is not None:  # CompressAI counts over B * H * W of the target
            bpp = bpp * (target.shape[0] * target.shape[-2] * target.shape[-1] / num_pixels)
        out = {"bpp": bpp}
        if self.metric_name == "mse":
            out["mse"] = rd["mse_loss"]
            out["loss"] = self.lmbda * 255**2 * out["mse"] + bpp
        else:
            out["ms_ssim"] = rd["ms_ssim_loss"]
            out["mse"] = nn.functional.mse_loss(output["x_hat"], target)
            out["loss"] = self.lmbda * (1 - out["ms_ssim"]) + bpp
        return out


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] images (inf for 0)."""
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")
