"""The accelc runtime: reads ``.accelc`` artifacts and runs them.

It needs only NumPy and ml_dtypes (for bf16 arrays) and never imports the compiler (IR, frontends,
passes, backends), so a deployment machine can run artifacts with a minimal install::

    import accelc.runtime as rt
    m = rt.load("model.accelc")
    y = m(x)
"""
from .artifact import FORMAT_VERSION, Artifact, pack, read, read_manifest, write
from .module import (ABI_VERSION, DTYPES, CompiledModule, NodeProfile, OpProfile, Profile, default_cache_dir, load,
                     numpy_dtype)

__all__ = ["FORMAT_VERSION", "ABI_VERSION", "Artifact", "CompiledModule", "DTYPES", "NodeProfile", "OpProfile",
           "Profile", "default_cache_dir", "load", "numpy_dtype", "pack", "read", "read_manifest", "write"]
