"""Which path a training step takes, and the execution plan it runs on."""

from fastnet.activations import kernel_code
from fastnet.optimizers import SGD, Adam

#: The paths a step can take.
PATHS = ("fused", "layered")


def plan(network, batch, comm=None, keep_grads=False):
    """The path a training step of ``network`` on ``batch`` rows takes, and why:
    ``(path, reason)``, ``path`` one of ``PATHS``.

    * ``"fused"``: one compiled call for the whole step, at any batch size:
      the numba backend, an ``SGD`` (any momentum, Nesterov, weight decay) or
      ``Adam`` optimizer, and built-in activations.  Up to ``FUSED_MAX_BATCH``
      rows (20; Adam ``FUSED_MAX_BATCH_ADAM``, 40, but 20 on Zen 4; 8 when a
      layer's weights take 1 MiB or more;
      ``fastnet.kernels.numba.tuning``) its products are the compiled register
      tiles and loops; past that BLAS's, called from the compiled step.
    * ``"layered"``: layer by layer, gradients first, then the optimizer.

    Reads the network's settings and changes nothing.
    """
    opt = network.optimizer
    if keep_grads:
        return "layered", "keep_grads: the layered path keeps each layer's dw, db and dx"
    if comm is not None:
        return "layered", "a communicator: the ranks' gradients are added before any update"
    if network.backend != "numba":
        return "layered", f"the {network.backend} backend has no fused step"
    if type(opt) not in (SGD, Adam):
        return "layered", f"{type(opt).__name__} is not SGD or Adam: its rule is its own"
    custom = [i for i, la in enumerate(network.layers) if kernel_code(la.activation) is None]
    if custom:
        return "layered", f"layers[{custom[0]}]'s activation has no compiled kernel"
    if not products_by_blas(network, batch):
        return "fused", f"one compiled call, products by the register tiles ({batch} rows)"
    if network.kernels.blas.address(network.dtype):
        return "fused", f"one compiled call, products by BLAS ({batch} rows)"
    return "layered", "no BLAS that compiled code can call (not NumPy's OpenBLAS) past the tiles' batches"


def products_by_blas(network, batch):
    """Whether a fused step of ``network`` (numba backend) on ``batch`` rows
    multiplies by BLAS, not by the register tiles (``tuning.fused_by_blas``)."""
    w_bytes = max(la.n_inputs * la.neurons_num for la in network.layers) * network.dtype.itemsize
    return network.kernels.tuning.fused_by_blas(batch, w_bytes, adam=type(network.optimizer) is Adam)


def execution_plan(network, batch, state=None):
    """How a step of ``network`` on a batch of this size runs: ``(path, fused
    plan, the layers' (a, y, dz))``, the last two None off the fused path.
    Made once per batch size and kept in the network's ``StepState``
    (``state``, when the caller has it), which is made anew, with no plans,
    whenever anything of the checked state changes."""
    plans = (network.step_state if state is None else state).plans
    entry = plans.get(batch)
    if entry is not None:
        return entry
    if len(plans) >= 8:  # batch sizes seen since the state last changed: bounded
        plans.clear()
    path, _ = plan(network, batch)
    fused = buffers = None
    if path == "fused":
        layers = network.layers
        buffers = [la._buffers(batch) for la in layers]
        state = network.optimizer.state
        v, m = (state["v"], state["m"]) if isinstance(state, dict) else (state, ())
        scratch = next((e[1].scratch for e in plans.values() if e[1] is not None), None)
        fused = network.kernels.fused_plan(  # another plan's scratch is reused when large enough
            [la.w for la in layers], [la.b for la in layers], v[0::2], v[1::2],
            [kernel_code(la.activation) for la in layers], [la.activation.alpha for la in layers],
            [a for a, _, _ in buffers], [y for _, y, _ in buffers], [dz for _, _, dz in buffers], scratch,
            m[0::2], m[1::2])
    entry = plans[batch] = (path, fused, buffers)
    return entry
