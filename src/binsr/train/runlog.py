"""Per-run logs on rank 0: ``log.csv`` (step, loss, lr, it_s, val_psnr, val_ssim) and TensorBoard events.

On resume, CSV rows and TensorBoard events after the checkpoint's step are dropped (they are
written again by the resumed run), so the logs read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from binsr.errors import UsageError
from binsr.files import read_text

__all__ = ["RunLog", "CSV_FIELDS", "read_val_curve"]

CSV_FIELDS = ("step", "loss", "lr", "it_s", "val_psnr", "val_ssim")


def read_val_curve(log_file: str | Path) -> list[tuple[int, float]]:
    """(step, validation PSNR) of every validated row of a run's ``log.csv``; [] when there is no
    log; a log that cannot be read or parsed is a one-line :class:`UsageError`."""
    log_file = Path(log_file)
    if not log_file.exists():
        return []
    text = read_text(log_file, "training log", 64 << 20)
    if not text:
        return []
    try:
        rows = csv.DictReader(io.StringIO(text, newline=""))
        if not {"step", "val_psnr"} <= set(rows.fieldnames or ()):
            raise UsageError(f"training log {log_file} is not a binsr log.csv (no step and val_psnr columns)")
        return [(int(row["step"]), float(row["val_psnr"])) for row in rows if row.get("val_psnr")]
    except (csv.Error, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"training log {log_file} has a malformed row ({type(exc).__name__}: {exc})") from None


class RunLog:
    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool) -> None:
        self.csv_path = run_dir / "log.csv"
        rows = []
        if start_step > 0 and self.csv_path.exists():
            with open(self.csv_path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
        self._fh = open(self.csv_path, "w", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=CSV_FIELDS)
        self._csv.writeheader()
        self._csv.writerows(rows)
        self._fh.flush()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, train: dict[str, float] | None, val: dict[str, float] | None) -> None:
        """One CSV row (train and/or val values) and the matching TensorBoard scalars."""
        row: dict[str, object] = {"step": step}
        if train:
            row.update(loss=repr(train["loss"]), lr=repr(train["lr"]), it_s=f"{train['it_s']:.4g}")
        if val:
            row.update(val_psnr=f"{val['psnr']:.4f}", val_ssim=f"{val['ssim']:.5f}")
        self._csv.writerow(row)
        self._fh.flush()
        if self._tb is not None:
            for prefix, values in (("train", train), ("val", val)):
                for key, value in (values or {}).items():
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)
            self._tb.flush()

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()
