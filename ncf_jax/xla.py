"""Stage: compilation. `jit` for the hot loops: `jax.jit` plus the XLA options measured to help.

Training epochs and evaluation compile through it. On CPU, XLA (jax 0.10) hands the dots of
small dense layers to YNNPACK fusions by default; for the NCF MLP tower at batch 256 those run
at about half the speed of XLA's own dot kernels. With them kept out, a factor-32 NeuMF epoch on
ML-100K took 2.2 s instead of 3.0 s (medians of 4 interleaved epochs, 2-core AVX2 CPU), and
factor 8 was unchanged. The option is probed once with a tiny compile, so a jax without it (or
another backend) just gets plain `jax.jit`.
"""

from __future__ import annotations

import functools

import jax
from absl import logging

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """The options `jit` adds on this backend, or None."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(1.0).compile()
    except Exception as error:  # an XLA without the option: plain jit is correct, just slower
        logging.info("XLA CPU options %s not available (%s); using defaults", _CPU_OPTIONS, error)
        return None
    return dict(_CPU_OPTIONS)


def jit(fun=None, **kwargs):
    """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`; `@jit` or `@jit(...)`.

    XLA takes compiler options only for a top-level computation, so a call traced inside
    another jit (a sharded or vmapped epoch built on this one) goes through plain `jax.jit`;
    that outer function should itself be built with this `jit`.
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    plain = jax.jit(fun, **kwargs)
    options = compiler_options()
    if options is None:
        return plain
    tuned = jax.jit(fun, compiler_options=options, **kwargs)

    @functools.wraps(fun)
    def call(*args, **kw):
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kw)))
        return (plain if traced else tuned)(*args, **kw)

    call.lower = tuned.lower
    return call


def use_compilation_cache(directory) -> str:
    """Points XLA's persistent compilation cache at `directory` (compiles of any duration are
    kept), unless one is configured already (JAX_COMPILATION_CACHE_DIR); returns the one in use.

    For a process that runs many runs of the same shapes (`ncf_jax.commands.compare`): each run
    builds its own jitted closures, so without the cache every run compiles its epoch and evaluators
    again (0.4 s each on ML-100K). A cached executable is the compiled program itself, so
    results do not change. Takes effect only before the process's first compilation.
    """
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(directory)
