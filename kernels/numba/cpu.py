"""How the compiled kernels are compiled, cached and call one another (no twin in
``fastnet.kernels.numpy``: the reference needs none of it).

* The vector width: ``WIDE_VECTORS`` and ``wide_vectors()``.
* The decorators ``jit``, ``jit_fma`` and ``jit_dot``, whose on-disk cache is
  keyed on the source of every kernel module (``SOURCE_DIGEST``).  numba
  checks only the file that defines a function, but a compiled kernel holds
  the code of the kernels it calls, which live in other files: without the
  digest, an upgrade that changed ``activations.py`` alone would leave the
  cached forward pass computing the old activations.  ``cached`` tells
  whether that cache holds a kernel for given argument types.
* ``on_compile``: callbacks told when the kernels start and stop compiling
  (numba's ``numba:compile`` events; a kernel loaded from the cache sends none).
* Calls by address (``Leaves``): a kernel that calls large kernels through
  their compiled addresses, passed to it at run time, instead of linking their
  code into its own (and arrays by address: ``data_address``, ``array_at``;
  a float array's bits as integers of its width: ``float_bits``).
  numba links the code of every compiled function a
  kernel calls into the kernel's module and optimises and generates machine
  code for all of it again, so a kernel that calls many large ones costs the
  sum of their compile times once more (``fused_sgd_step``: 5.4 s of its own
  on top of 24 s for its callees, cold, Zen 3).  Called by address, each is
  compiled once, and the caller stays small.
"""

import hashlib
from pathlib import Path

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils, event
from numba.core import config as numba_config
from numba.core.caching import FunctionCache
from numba.extending import intrinsic

DISABLED = bool(numba_config.DISABLE_JIT)  # NUMBA_DISABLE_JIT: the kernels run as Python


# -- vector width ---------------------------------------------------------------------
# LLVM's models of Intel's AVX-512 server cores prefer 256-bit vectors (older
# ones lower their clock for 512-bit code), so the loops would use ymm
# registers.  On the cores listed here, where 512-bit code runs at full clock,
# the kernels that call ``wide_vectors()`` ask LLVM for zmm instead: measured
# 1.05-1.2x faster for the fused step (784-256-256-10 MLP, B = 1-16, Emerald
# Rapids, side by side).  The choice depends only on the CPU name, which is in
# numba's cache key, so a cached kernel never carries another CPU's choice.
WIDE_VECTOR_CPUS = ("sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d")


def host_cpu_name():
    """The CPU numba compiles for, chosen as numba chooses it."""
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name() if numba_config.CPU_NAME is None else numba_config.CPU_NAME


WIDE_VECTORS = host_cpu_name() in WIDE_VECTOR_CPUS
#: Bytes of the vectors the register tiles use.
VEC_BYTES = 64 if WIDE_VECTORS else 32


def lanes(itemsize):
    """Elements of ``itemsize`` bytes in one vector of the register tiles."""
    return VEC_BYTES // itemsize


@intrinsic
def _wide_vectors(typingctx):
    def codegen(context, builder, signature, args):
        if WIDE_VECTORS:
            # llvmlite's FunctionAttributes only accepts the attributes it knows
            # by name; LLVM's string attributes are added as the raw text it prints.
            attrs = builder.function.attributes
            if isinstance(attrs, set):  # else llvmlite changed: keep LLVM's choice
                set.add(attrs, '"prefer-vector-width"="512"')
                set.add(attrs, '"min-legal-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


def _no_hint():
    """Under NUMBA_DISABLE_JIT there is nothing to compile."""


#: Call first in a kernel to let LLVM use 512-bit vectors there (when ``WIDE_VECTORS``).
wide_vectors = _no_hint if DISABLED else _wide_vectors


# -- decorators and their cache ---------------------------------------------------------
def _source_digest():
    here = Path(__file__).resolve().parent
    files = sorted([*here.glob("*.py"), *(here.parent / "numpy").glob("*.py"), here.parent / "__init__.py"])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


#: A hash of the source of every kernel module, in every cached kernel's key.
SOURCE_DIGEST = _source_digest()


class KernelCache(FunctionCache):
    """numba's on-disk cache, with ``SOURCE_DIGEST`` in every entry's key."""

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), SOURCE_DIGEST)


def cached(kernel, args):
    """Whether numba's on-disk cache holds ``kernel`` (one of this package's) compiled
    for ``args``, a tuple of numba types, as a call from Python compiles it."""
    cache = getattr(kernel, "_cache", None)
    try:
        key = cache._index_key(tuple(args), kernel.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except AttributeError:  # not a kernel of this package, or numba's cache changed: say no
        return False


class CacheUnavailable(ImportError):
    """numba found no writable place for its cache of compiled kernels."""


def cache_dir():
    """The folder where numba caches the compiled kernels (None under NUMBA_DISABLE_JIT)."""
    return None if DISABLED else KernelCache(cache_dir)._cache_path


def _decorator(**base):
    def jit(func=None, **options):
        if func is None:  # @jit(inline="always") and the like
            return lambda f: jit(f, **options)
        kernel = njit(nogil=True, error_model="numpy", no_cfunc_wrapper=True, **base, **options)(func)
        if not DISABLED:
            try:
                kernel._cache = KernelCache(kernel.py_func)
            except RuntimeError as exc:  # numba: "no locator available"
                raise CacheUnavailable(
                    f"numba has nowhere to cache compiled kernels ({exc}); set NUMBA_CACHE_DIR "
                    "to a writable folder, or make the package's folder or the user cache "
                    "folder writable") from None
        return kernel

    return jit


# error_model="numpy": a float division by zero gives inf or NaN, as in NumPy,
# instead of numba's check and exception at every division.
#: Compiled, cached, without the GIL.
jit = _decorator()
#: ``jit`` where multiply-adds may contract into FMAs (a few ulp, within the
#: agreement tolerances; NaN and inf semantics unchanged).
jit_fma = _decorator(fastmath={"contract"})
#: ``jit_fma`` where sums may also reassociate (several accumulators, vectorised).
jit_dot = _decorator(fastmath={"contract", "reassoc"})


def by_code(make, names, decorate):
    """``decorate(make(code))`` for each code of ``names`` (a code table such as
    ``fastnet.kernels.ACTIVATIONS``), each function named after its code
    ("forward_relu"): a kernel per code, each with its own index in numba's
    on-disk cache, which numba names after the function.  (Under one name the
    kernels would share one index, and processes compiling them at once, as
    ``warm`` does, would overwrite each other's entries.)"""
    kernels = []
    for code, name in enumerate(names):
        func = make(code)
        func.__name__ = func.__qualname__ = f"{func.__name__}_{name}"
        kernels.append(decorate(func))
    return tuple(kernels)


# -- compile events ---------------------------------------------------------------------------
class _CompileWatch(event.Listener):
    """Calls each callback with True when a kernel of this package starts
    compiling (the outermost, when kernels compile the kernels they call), and
    with False when it is done."""

    def __init__(self):
        self.callbacks, self.depth = [], 0

    @staticmethod
    def _ours(ev):
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        return getattr(func, "__module__", "").startswith(__package__ + ".")

    def on_start(self, ev):
        if self._ours(ev):
            self.depth += 1
            if self.depth == 1:
                for callback in list(self.callbacks):
                    callback(True)

    def on_end(self, ev):
        if self._ours(ev):
            self.depth -= 1
            if self.depth == 0:
                for callback in list(self.callbacks):
                    callback(False)


_WATCH = _CompileWatch()
if not DISABLED:
    event.register("numba:compile", _WATCH)


def on_compile(callback):
    """Call ``callback(True)`` when this package's kernels start compiling and
    ``callback(False)`` when they are done (nothing for kernels loaded from
    the cache); returns a function that removes the callback."""
    _WATCH.callbacks.append(callback)
    return lambda: _WATCH.callbacks.remove(callback) if callback in _WATCH.callbacks else None


# -- calls by address ---------------------------------------------------------------------
def _address(kernel, sig):
    """The address of ``kernel`` compiled for ``sig`` (compiled now or loaded from the cache)."""
    # compiled for the argument types alone, as a call from Python compiles it: numba
    # keys its on-disk cache on what it is given, and a full signature (with the
    # return type) would be another entry, compiled again by every other process
    kernel.compile(sig.args)
    cres = kernel.overloads[tuple(sig.args)]
    if cres.signature.return_type != sig.return_type:
        raise TypeError(f"{kernel.__name__} returns {cres.signature.return_type}, not {sig.return_type}")
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


class Leaves:
    """Kernels that another kernel calls through their compiled addresses.

    Each entry is ``(kernels, signature)``: one compiled kernel, or a tuple of
    them indexed by a code (one per activation or loss), and
    ``signature(dtype)``, the numba signature they are called with for arrays
    of ``dtype``.  In the calling kernel, ``call(fns, entry, code, args)`` calls
    entry ``entry`` (an integer constant), kernel ``code`` (0 for a single
    kernel), with the tuple ``args``; ``fns = table(dtype)`` is passed to the
    calling kernel at run time.  A kernel's address is 0 until ``need`` has
    compiled it (or loaded it from the cache): the caller of the calling kernel
    makes sure every kernel it will reach is there, so only what is used is
    compiled.  ``call`` refuses, when it is compiled, arguments whose types are
    not exactly the entry's signature for their dtype (constants aside: they are
    cast to it): the address would be of code compiled for other types.
    """

    def __init__(self, *entries):
        self.entries = [(kernels if isinstance(kernels, tuple) else (kernels,), signature)
                        for kernels, signature in entries]
        self.offsets = np.cumsum([0] + [len(k) for k, _ in self.entries]).tolist()
        self._tables = {}
        self.call = self._python_call if DISABLED else self._intrinsic()

    def table(self, dtype):
        """The int64 array of addresses for ``dtype`` (0 where not compiled yet)."""
        dtype = np.dtype(dtype)
        if dtype not in self._tables:
            self._tables[dtype] = np.zeros(self.offsets[-1], np.int64)
        return self._tables[dtype]

    def _signature(self, dtype, entry):
        return self.entries[entry][1](types.float32 if np.dtype(dtype) == np.float32 else types.float64)

    def kernel(self, dtype, entry, code=0):
        """(kernel, argument types): kernel ``code`` of ``entry`` and what ``need``
        compiles it for, for arrays of ``dtype``."""
        return self.entries[entry][0][code], self._signature(dtype, entry).args

    def has(self, dtype, entry, code=0):
        """Whether ``need`` has made kernel ``code`` of ``entry`` ready for ``dtype``."""
        return self.table(dtype)[self.offsets[entry] + code] != 0

    def need(self, dtype, entry, code=0):
        """Compile (or load from the cache) kernel ``code`` of ``entry`` for ``dtype``."""
        fns, slot = self.table(dtype), self.offsets[entry] + code
        if DISABLED:
            fns[slot] = 1  # nothing to compile: ``call`` runs the Python function
        elif fns[slot] == 0:
            fns[slot] = _address(self.entries[entry][0][code], self._signature(dtype, entry))

    def _python_call(self, fns, entry, code, args):
        return self.entries[entry][0][code](*args)

    def _intrinsic(self):
        entries, offsets = self.entries, self.offsets

        @intrinsic(prefer_literal=True)
        def call(typingctx, fns, entry, code, args):
            if not isinstance(entry, types.IntegerLiteral) or not isinstance(args, types.BaseTuple):
                return None
            n = entry.literal_value
            kernels, signature = entries[n]
            arrays = [t for t in args.types if isinstance(t, types.Array)]
            want = signature(arrays[0].dtype) if arrays else None
            if want is None or tuple(map(types.unliteral, args.types)) != tuple(want.args):
                raise TypeError(f"leaf {n} ({kernels[0].__name__}) takes {want}, got {args}")

            def codegen(context, builder, sig, llargs):
                fns_ = context.make_array(fns)(context, builder, value=llargs[0])
                index = builder.add(context.cast(builder, llargs[2], code, types.intp),
                                    context.get_constant(types.intp, offsets[n]))
                fnty = context.call_conv.get_function_type(want.return_type, want.args)
                fnptr = builder.inttoptr(builder.load(builder.gep(fns_.data, [index])), fnty.as_pointer())
                values = [context.cast(builder, v, t, u) for v, t, u in zip(
                    cgutils.unpack_tuple(builder, llargs[3], len(want.args)), args.types, want.args,
                    strict=True)]
                status, result = context.call_conv.call_function(
                    builder, fnptr, want.return_type, want.args, values)
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
                return result

            return want.return_type(fns, entry, code, args), codegen

        return call


@intrinsic
def _pointer(typingctx, address, like):
    ptr = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(address, like), codegen


@intrinsic
def _bits_pointer(typingctx, a):
    if not isinstance(a, types.Array) or a.layout != "C" or a.dtype not in (types.float32, types.float64):
        return None
    ptr = types.CPointer(types.uint32 if a.dtype == types.float32 else types.uint64)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        return builder.bitcast(data, context.get_value_type(ptr))

    return ptr(a), codegen


if DISABLED:
    def float_bits(a):
        """The bits of C-contiguous float32 or float64 ``a``, flat, as unsigned
        integers of its width (a view)."""
        return a.reshape(-1).view(np.uint32 if a.itemsize == 4 else np.uint64)
else:
    @jit(inline="always")
    def float_bits(a):
        """The bits of C-contiguous float32 or float64 ``a``, flat, as unsigned
        integers of its width (a view; the integer type is chosen while typing,
        so a kernel compiles the reductions over its own width alone)."""
        return carray(_bits_pointer(a), (a.size,))


def data_address(a):
    """The address of ``a``'s first element, for ``array_at`` (the caller holds ``a``;
    under NUMBA_DISABLE_JIT, a number that names ``a``: see there)."""
    if DISABLED:
        _SEEN[id(a)] = a
        return id(a)
    return a.__array_interface__["data"][0]


if DISABLED:
    import weakref

    # the arrays data_address has named, by id: arrays can share an address (an
    # empty velocity ``w[:0]`` starts where ``w`` does), never an id while alive
    _SEEN = weakref.WeakValueDictionary()

    def array_at(address, n_rows, n_cols, like):
        """The first n_rows x n_cols elements of the array ``data_address`` named
        ``address``, as Python (no raw memory is read)."""
        return _SEEN[address].reshape(-1)[:n_rows * n_cols].reshape(n_rows, n_cols)
else:
    @jit(inline="always")
    def array_at(address, n_rows, n_cols, like):
        """The (n_rows, n_cols) C-contiguous array of like's dtype at ``address``
        (an integer from ``data_address``)."""
        return carray(_pointer(address, like), (n_rows, n_cols))
