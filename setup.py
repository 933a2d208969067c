"""Build hook for the compiled deployment engine (binsr.deploy._engine); metadata lives in pyproject.toml.

The extension is optional: without a working C++ compiler the package still installs and
binsr.deploy falls back to its NumPy path.

The kernels are one file per ISA (LCE / XNNPACK style), each compiled with that ISA's -m flags and
called only where the CPU has it (conv.cpp's run-time dispatch); the other files get no ISA flag.
On other architectures the x86 files compile to nothing, and kernels_neon.cpp to the aarch64 path.
"""
import platform

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

CSRC = "src/binsr/deploy/csrc"
_AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vpopcntdq", "-mavx512bitalg", "-mavx2", "-mpopcnt", "-mfma"]
ISA_FLAGS = {
    "kernels_avx2.cpp": ["-mavx2", "-mpopcnt", "-mfma"],
    "kernels_avx512.cpp": _AVX512,
    "kernels_amx.cpp": _AVX512 + ["-mamx-tile", "-mamx-int8"],
}
# No contraction in the kernels: a * b + c rounds twice as PyTorch and the NumPy reference do, on
# every ISA alike (the folded-BN FMA of the epilogue is an explicit std::fma).
KERNEL_FLAGS = ["-ffp-contract=off"]
X86 = platform.machine().lower() in ("x86_64", "amd64")


class BuildEngine(build_ext):
    """build_ext that adds each kernel file's ISA flags to that file's compile command only."""

    def build_extension(self, ext):
        compile_one = self.compiler._compile

        def _compile(obj, src, ext_, cc_args, extra_postargs, pp_opts):
            name = src.replace("\\", "/").rsplit("/", 1)[-1]
            flags = (ISA_FLAGS.get(name, []) if X86 else []) + (KERNEL_FLAGS if name.startswith("kernels_") else [])
            compile_one(obj, src, ext_, cc_args, list(extra_postargs) + flags, pp_opts)

        self.compiler._compile = _compile
        try:
            super().build_extension(ext)
        finally:
            self.compiler._compile = compile_one


SOURCES = ["engine.cpp", "conv.cpp", "chain.cpp", "kernels_portable.cpp", "kernels_avx2.cpp", "kernels_avx512.cpp",
           "kernels_amx.cpp", "kernels_neon.cpp"]
engine = Pybind11Extension(
    "binsr.deploy._engine",
    [f"{CSRC}/{s}" for s in SOURCES],
    include_dirs=[CSRC],
    depends=[f"{CSRC}/engine.h", f"{CSRC}/rows.inc", f"{CSRC}/epilogue.inc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"],  # lets the FP helper loops vectorise
    extra_link_args=["-pthread"],
    optional=True,
)

setup(ext_modules=[engine], cmdclass={"build_ext": BuildEngine})
