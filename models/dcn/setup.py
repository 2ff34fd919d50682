"""Build the deformable-convolution extension `_C` next to this file.

    cd models/dcn && python setup.py build_ext --inplace      (or `make build-ext` in the repo root)

Always builds the C++ CPU code (OpenMP). Adds the CUDA kernels when torch is a CUDA build, a CUDA
toolkit (nvcc and its headers) is found, and the GPU architectures are known: those of the visible
GPUs, or TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0") on a machine without one. WNET_DCN_CPU_ONLY=1 skips
the CUDA kernels; CUDA_HOME picks the toolkit.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
SOURCE_DIR = Path("src")  # relative to HERE, where main() runs setup
CPU_SOURCES = ["deform_conv.cpp", "deform_conv_cpu.cpp"]
CUDA_SOURCES = ["deform_conv_cuda.cu"]
CUDA_HEADER = Path("include") / "cuda_runtime.h"


def _toolkit_root_from_nvcc() -> Optional[str]:
    """The toolkit root nvcc reports (`#$ TOP=...` in a dry run); it sees through wrapper scripts."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        command = [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.path.join(scratch, "probe.o")]
        try:
            dry_run = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    for line in (dry_run.stdout + dry_run.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return os.path.realpath(line[len("#$ TOP="):].strip())
    return None


def _find_cuda_toolkit() -> Optional[str]:
    """CUDA_HOME if it holds the CUDA headers, else the root nvcc reports; None when neither does."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), _toolkit_root_from_nvcc()]
    for root in candidates:
        if root and (Path(root) / CUDA_HEADER).is_file() and (Path(root) / "bin" / "nvcc").exists():
            return root
    return None


def _want_cuda() -> bool:
    if os.environ.get("WNET_DCN_CPU_ONLY", "0") == "1":
        print("setup.py: WNET_DCN_CPU_ONLY=1, building the CPU extension only")
        return False
    import torch  # imported late so that the CUDA_HOME chosen below reaches torch.utils.cpp_extension

    if torch.version.cuda is None:
        print("setup.py: torch is a CPU-only build, building the CPU extension only")
        return False
    toolkit = _find_cuda_toolkit()
    if toolkit is None:
        print("setup.py: no CUDA toolkit (nvcc and include/cuda_runtime.h) found, building the CPU extension only")
        return False
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # torch takes the GPU architectures from the visible GPUs; without one it cannot choose.
        print(f"setup.py: CUDA toolkit in {toolkit} but no GPU visible and TORCH_CUDA_ARCH_LIST unset, building "
              f"the CPU extension only (set e.g. TORCH_CUDA_ARCH_LIST='8.0;9.0' to build the CUDA kernels)")
        return False
    os.environ["CUDA_HOME"] = toolkit
    print(f"setup.py: building the CPU and CUDA extension with the toolkit in {toolkit}")
    return True


def _extensions() -> List:
    with_cuda = _want_cuda()
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    openmp = "/openmp" if sys.platform == "win32" else "-fopenmp"
    cxx_flags = ["-O3", openmp]
    sources = [str(SOURCE_DIR / name) for name in CPU_SOURCES]
    if with_cuda:
        return [CUDAExtension(
            name="_C",
            sources=sources + [str(SOURCE_DIR / name) for name in CUDA_SOURCES],
            include_dirs=[str(SOURCE_DIR)],
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
            extra_link_args=[openmp],
        )]
    return [CppExtension(
        name="_C",
        sources=sources,
        include_dirs=[str(SOURCE_DIR)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=[openmp],
    )]


def main() -> None:
    from setuptools import setup

    os.chdir(HERE)
    extensions = _extensions()  # before importing cpp_extension, which reads CUDA_HOME once
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="wnet_dcn",
        version="0.1.0",
        description="Deformable convolution v1 for Wnet (C++ CPU and CUDA)",
        ext_modules=extensions,
        cmdclass={"build_ext": BuildExtension},
    )


if __name__ == "__main__":
    main()
