"""NeuralNetwork: dense layers stacked, a loss, an optimizer, and training."""

import contextlib
import functools
import threading

import numpy as np

from fastnet import training
from fastnet._changes import Watched, changed
from fastnet._checks import StateChecks, _check_logits, _check_optimizer_type, _twice
from fastnet._validation import as_float_batch, flag, kernel_ready, positive_int, random_generator
from fastnet._workspace import rows
from fastnet.backend import HoldsKernels, kernels_for, resolve_backend
from fastnet.callbacks import check_callbacks, held_out
from fastnet.layers import DenseLayer
from fastnet.losses import SoftmaxCrossEntropy, get_loss
from fastnet.optimizers import SGD

MODES = ("sgd", "gd")
_PREDICT_CHUNK = 1024
_NOTHING = contextlib.nullcontext()


def _serialised(method):
    """Run ``method`` under the network's lock: calls from several threads run
    one at a time (the network's and its layers' buffers are shared)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        lock = self._lock
        lock.acquire()  # not "with": measured 0.3 us a call more (Python 3.11)
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()
    return locked


def _inference(method):
    """``_serialised``, for methods that do not check the whole state first
    (``_outputs`` says why): an unexpected error is looked at again by that
    check, which names tampered state where there is some."""
    @functools.wraps(method)
    def checked_on_error(self, *args, **kwargs):
        lock = self._lock
        lock.acquire()
        try:
            return method(self, *args, **kwargs)
        except (AttributeError, TypeError, ValueError, IndexError):
            self._check_state(optimizer=False)  # raises the clearer error, if any
            raise
        finally:
            lock.release()
    return checked_on_error


class NeuralNetwork(StateChecks, HoldsKernels):
    """A stack of dense layers trained by SGD (minibatches) or full gradient descent.

    Parameters
    ----------
    layers : sequence of DenseLayer
        The first must know its input size; a later layer built without
        ``input_size_info`` takes the previous layer's ``neurons_num``.
    loss : Loss or str
        ``MeanSquaredError``, ``SoftmaxCrossEntropy`` or ``BinaryCrossEntropy``
        (or their names).  The cross-entropies take logits: the last layer's
        activation must then be the identity.
    optimizer : Optimizer, default ``SGD(0.01)``
    backend : None, "auto", "numpy" or "numba"
        Applied to every layer; None is ``fastnet.get_default_backend()``.

    Notes
    -----
    The public methods validate their arguments before changing anything: a
    bad call raises ``TypeError`` or ``ValueError`` and leaves the parameters
    and the optimizer state as they were.  Floating-point inputs of the other
    precision are cast to the network's dtype (a copy); integer, bool,
    complex and other non-float inputs are refused.

    Everything the kernels will index (the layers' parameters and widths, the
    optimizer's state) and the construction rules (no layer twice, one dtype,
    an identity last layer under a logit loss, an optimizer of this network's
    own) are checked again whenever any of them was replaced since the last
    call, so tampered state raises ``ValueError`` or ``TypeError`` instead of
    reaching compiled loops.

    A network reuses buffers of its own and of its layers from call to call.
    Its public methods hold a lock of the network's own, so calls from several
    threads (``predict`` from a thread pool, or training) run one at a time on
    it and give exactly the results of running them one after the other; for
    parallel work, use one network per thread.  ``copy.deepcopy`` or pickle
    gives an independent network with the same parameters, settings and
    optimizer state, without those buffers.

    A step whose update could overflow (an input of 3e38, a diverging run)
    raises ``FloatingPointError`` naming the step and the layer, with nothing
    changed: every layer's update is checked before any is applied, from the
    largest magnitudes of its input and dz and bounds on its parameters and
    optimizer state that the steps carry forward (``fastnet.kernels.numpy.
    optimizers`` explains the rule).  Those bounds are taken from the arrays
    again whenever state is replaced and at every ``fit``; values written into
    the parameters or the state in place in between are not looked at (write
    huge values that way and the check can miss an overflow).
    """

    # not copied (HoldsKernels), nor are the workspaces
    _CACHES = ("_checked_at", "_steps")
    layers = Watched()  # kept as a watched list: a change in it counts (``_changes``)

    def __init__(self, layers, loss, optimizer=None, backend=None):
        # Everything is checked before any layer is built, so a refused network
        # leaves its layers as they were.
        layers = list(layers)
        if not layers:
            raise ValueError("a NeuralNetwork needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, DenseLayer):
                raise TypeError(f"layers[{i}] must be a DenseLayer, got {layer!r}")
        if not layers[0].built:
            raise ValueError("the first layer needs its input size: DenseLayer(..., input_size_info=n)")
        for i in range(1, len(layers)):
            prev, layer = layers[i - 1], layers[i]
            if layer.built and layer.n_inputs != prev.neurons_num:
                raise ValueError(
                    f"layers[{i}] takes {layer.n_inputs} inputs but layers[{i - 1}] "
                    f"has {prev.neurons_num} neurons"
                )
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) != 1:
            raise ValueError(f"all layers must share one dtype, got {sorted(d.name for d in dtypes)}")
        loss = get_loss(loss)
        _check_logits(loss, layers[-1])
        for i, layer in enumerate(layers):
            for j in range(i):
                if layers[j] is layer:
                    raise ValueError(_twice(j, i))
        optimizer = SGD(0.01) if optimizer is None else optimizer
        _check_optimizer_type(optimizer)
        optimizer._claim(self)
        try:
            resolve_backend(backend)
            for i in range(1, len(layers)):
                if not layers[i].built:
                    layers[i].build(layers[i - 1])
        except BaseException:
            optimizer._release(self)
            raise
        self.layers = layers
        self._loss = loss
        self._optimizer = optimizer
        self.backend = backend
        self._store = {}  # network-level workspaces, grown to the largest batch (see DenseLayer)
        self._checked_at = None  # the count of changes _checked last found right at (see there)
        self._steps = None  # the training.StepState made from the state checked then (step_state)
        self._lock = threading.RLock()

    def __getstate__(self):
        state = super().__getstate__()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._lock = threading.RLock()
        self._optimizer._claim(self)  # the copy's own optimizer (a copy too)

    # -- properties ----------------------------------------------------------------
    @property
    def loss(self):
        """The loss object; a ``Loss`` or a name may be assigned (checked at once;
        whether the last layer suits it, at the next call)."""
        return self._loss

    @loss.setter
    def loss(self, spec):
        self._loss = get_loss(spec)
        changed()

    @property
    def optimizer(self):
        """The optimizer; another ``Optimizer`` may be assigned, one that
        belongs to no other network (checked at once)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer):
        _check_optimizer_type(optimizer)
        optimizer._claim(self)
        if optimizer is not self._optimizer:
            self._optimizer._release(self)
        self._optimizer = optimizer
        changed()

    @property
    def backend(self):
        """The concrete backend of every layer (``"numpy"`` or ``"numba"``)."""
        return self._backend

    @backend.setter
    def backend(self, name):
        concrete = resolve_backend(name)
        for layer in self.layers:
            layer.backend = concrete
        self._backend = concrete
        self._k = kernels_for(concrete)
        changed()

    @property
    def dtype(self):
        return self.layers[0].dtype

    @property
    def n_inputs(self):
        return self.layers[0].n_inputs

    @property
    def n_outputs(self):
        return self.layers[-1].neurons_num

    def parameters(self):
        """All parameter arrays, in order ``[w0, b0, w1, b1, ...]``."""
        return [p for layer in self.layers for p in layer.parameters()]

    def gradients(self):
        """All gradient arrays of the last backward pass, in parameter order."""
        return [g for layer in self.layers for g in layer.gradients()]

    # -- validation ------------------------------------------------------------------
    @_serialised
    def check(self):
        """Check the state now, as every call does first when anything of it
        changed since the last check: the layers (their parameters' shapes and
        dtype, adjacent widths), the loss against the last activation, the
        optimizer and its state.  Raises ``TypeError`` or ``ValueError`` naming
        what is wrong; changes nothing else."""
        self._checked()

    def _check_x(self, x, name="X", whole=False):
        """Validated x; ``whole``: a data set that is split into batches later (a
        read-only one is then copied batch by batch, not whole: ``kernel_ready``)."""
        return as_float_batch(x, self.n_inputs, self.dtype, name=name, cast=True, writeable=not whole)

    def _check_xy(self, x, y, whole=False):
        """Validated (x, targets); ``whole`` as for ``_check_x``."""
        x = self._check_x(x, whole=whole)
        return x, self.loss.prepare_targets(y, x.shape[0], self.n_outputs, self.dtype)

    def _check_step_xy(self, x, y):
        """train_step's (x, targets, x's largest magnitude or None): targets
        that must be built (class labels) go into a workspace of the network."""
        if self._plain_labels_batch(x, y):
            # the common case in one kernel call; anything it refuses is looked
            # at again below, which raises the error that names the problem
            t = self._workspace("targets", x.shape[0], self.n_outputs)
            x_max = self._k.check_and_one_hot(x, y, t)
            if x_max >= 0:
                return x, t, x_max
        x = self._check_x(x)
        out = self._workspace("targets", x.shape[0], self.n_outputs)
        return x, self.loss.prepare_targets(y, x.shape[0], self.n_outputs, self.dtype, out=out), None

    def _plain_labels_batch(self, x, y):
        """x already a C-contiguous batch in the network's dtype and y int64
        class labels for it: nothing to cast or copy, only values to check."""
        return (type(x) is np.ndarray and type(y) is np.ndarray and type(self.loss) is SoftmaxCrossEntropy
                and x.dtype == self.dtype and y.dtype == np.int64 and x.ndim == 2 and y.ndim == 1
                and x.shape[1] == self.n_inputs and 0 < x.shape[0] == y.shape[0]
                and x.flags.c_contiguous and x.flags.writeable and x.flags.aligned
                and y.flags.c_contiguous and y.flags.writeable and y.flags.aligned)

    def _workspace(self, name, batch, width):
        return rows(self._store, name, batch, width, self.dtype)

    # -- passes -----------------------------------------------------------------------
    @_serialised
    def forward(self, x):
        """Forward pass of a (batch, n_inputs) array; returns the output buffer
        of the last layer (overwritten by the next pass: copy it to keep it)."""
        self._checked()
        return self._forward(self._check_x(x, "x"))

    @_serialised
    def backward(self, dout):
        """Backward pass of the per-sample loss gradient ``dout`` (batch, n_outputs)
        through every layer, after ``forward``; sets each layer's ``dw``, ``db``
        and (all but the first layer) ``dx``."""
        self._checked()
        last = self.layers[-1]
        if last.x is None:
            raise ValueError("backward called before forward: there is no cached input")
        dout = as_float_batch(dout, self.n_outputs, self.dtype, name="dout", cast=True)
        if dout.shape[0] != last.x.shape[0]:
            raise ValueError(f"dout has {dout.shape[0]} rows but the last forward had {last.x.shape[0]}")
        self._backward(dout)

    def _forward(self, x):
        for layer in self.layers:
            x = layer._forward(x)
        return x

    def _backward(self, dout):
        for i in range(len(self.layers) - 1, -1, -1):
            dout = self.layers[i]._backward(dout, compute_dx=i > 0)

    # -- training -----------------------------------------------------------------------
    @_serialised
    def train_step(self, x, y, keep_grads=False):
        """One forward, backward and optimizer update on one batch; returns the
        batch's loss before the update.

        On the numba backend with SGD, the step takes the fused path (one
        compiled call; see ``plan``), which updates the weights without
        keeping the layers' ``dw``, ``db`` and ``dx`` (they are None
        afterwards).  ``keep_grads=True`` takes the layered path, which sets them.
        """
        keep_grads = flag(keep_grads, "keep_grads")
        ahead = _NOTHING  # not looked for while the state is unchanged (the step then ran already)
        if self._will_check():
            rows = x.shape[0] if type(x) is np.ndarray and x.ndim == 2 else None
            ahead = training.compiling_ahead(self, rows, keep_grads)
        with ahead:
            self._checked()
            x, t, x_max = self._check_step_xy(x, y)
            return training.train_batch(self, x, t, "in train_step", keep_grads, x_max)

    def plan(self, batch_size, comm=None):
        """The path a training step takes for a batch of this size: ``"fused"``
        (one compiled call) or ``"layered"``; ``fastnet.training.plan`` says
        which, and why.  The fused path leaves the layers' ``dw``, ``db`` and
        ``dx`` unset; ``train_step(..., keep_grads=True)`` takes the layered
        path.  Under a communicator (``fit(..., comm=)``) the path is always
        ``"layered"``: the ranks' gradients must be added before any step."""
        return training.plan(self, batch_size, comm)[0]

    @_serialised
    def fit(self, X, y, epochs=1, batch_size=32, mode="sgd", shuffle=True,
            validation_data=None, progress=True, rng=None, comm=None, *,
            validation_split=None, callbacks=None, verbose=0):
        """Train on ``X``, ``y`` and return the history.

        Parameters
        ----------
        X : (n_samples, n_inputs) float array;  y : targets for the loss.
        epochs, batch_size : positive ints.
        mode : "sgd" updates after every minibatch of ``batch_size``; "gd" is
            full gradient descent: the epoch's gradient is accumulated over
            chunks of ``batch_size`` as a running mean weighted by chunk size
            (no list of gradients is kept), then applied in one update, the
            same update as one step on the whole data set.
        shuffle : reshuffle the samples every epoch (with ``rng``).
        validation_data : optional ``(X_val, y_val)`` evaluated after every epoch.
        progress : show a tqdm progress bar (on stderr, once the work has lasted
            a second).
        rng : None, int or Generator for the shuffling.
        comm : None or an mpi4py communicator for data-parallel training (see
            ``fastnet.distributed``).  Every rank calls ``fit`` with its own
            shard as ``X``, ``y`` (and of ``validation_data``) and the same
            other arguments; ``batch_size`` is per rank, so a step's global
            batch is the sum over the ranks.  The parameters and optimizer
            state start as rank 0's, each step's gradients are averaged over
            the global batch by one Allreduce, the replicas stay identical,
            and the history holds global means.  Where the fused step runs,
            each step is split at the Allreduce: its gradients by the fused
            step's compiled first half, straight into the reduction buffer,
            then the reduction, then the checked update (``plan(batch_size,
            comm)`` says ``"layered"``: the update is not fused).  Only
            rank 0 shows a progress bar; the history has ``allreduce_seconds``
            per epoch, this rank's time in the reductions.  Callbacks see the
            global figures on every rank, and training stops when one rank's
            callbacks ask to; they must change the hyperparameters alike on
            every rank (the built-in ones do).
        validation_split : None, or a fraction in (0, 1): the last part of ``X``,
            ``y`` (taken before any shuffling, as Keras does) is held out as
            the validation data instead of being trained on.  Not together
            with ``validation_data``.
        callbacks : a list of callbacks (see ``fastnet.callbacks``): objects
            with ``on_epoch_end(epoch, logs) -> bool``, True to stop, and
            optionally ``on_train_begin``, ``on_epoch_begin``,
            ``on_train_end``; for example ``EarlyStopping`` and
            ``LearningRateScheduler``.  State they replace (a layer's
            weights, the optimizer, layers that take the same data; under
            ``comm``, of the same shapes) is checked at the next epoch's
            start and trained from there on.
        verbose : 0 prints nothing; 1 prints one line per epoch on stdout (the
            epoch, its time, loss and metrics), and keeps the progress bar on
            the screen after ``fit``.

        Returns
        -------
        dict of lists, one entry per epoch: ``loss`` (the mean of the batch
        losses, each measured before its update), ``accuracy`` for the
        classification losses, and ``val_loss``/``val_accuracy`` when
        ``validation_data`` is given.

        Raises
        ------
        FloatingPointError
            When the loss becomes NaN or inf; the message names the epoch and
            step, and the update of that step is not applied.
        fastnet.distributed.DistributedError
            With ``comm``, on the other ranks when one rank failed (that rank
            raises its own exception); no rank applies that step's update.
        """
        ahead = training.compiling_ahead(self, batch_size if mode == "sgd" and comm is None else None)
        with ahead:  # a cold process: a helper for the step's leaves sets up while the checks compile
            return self._fit(X, y, epochs, batch_size, mode, shuffle, validation_data, progress, rng, comm,
                             validation_split, callbacks, verbose)

    def _fit(self, X, y, epochs, batch_size, mode, shuffle, validation_data, progress, rng, comm,
             validation_split, callbacks, verbose):
        shuffle, progress = flag(shuffle, "shuffle"), flag(progress, "progress")
        callbacks = check_callbacks(callbacks)
        if isinstance(verbose, (bool, np.bool_)) or verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        fit_args = (epochs, batch_size, mode, shuffle, validation_data, validation_split, rng)
        if comm is None:
            epochs, batch_size, X, T, val, rng = self._fit_checks(X, y, *fit_args)
            dp = None
        else:
            from fastnet import distributed

            distributed.check_comm(comm)
            # every check that can fail on one rank runs under agree(), before any change
            epochs, batch_size, X, T, val, rng = distributed.agree(
                comm, lambda: self._fit_checks(X, y, *fit_args), "fit")
            distributed.check_replicas(comm, self, (epochs, batch_size, mode, bool(shuffle), val is not None))
            dp = distributed.DataParallel(self, comm, X.shape[0], batch_size, mode)
            distributed.broadcast_state(comm, self)
            # rank 0's parameters and state now: the state's assignment is a change, so the check
            # drops the plans made from the old state and takes the update bounds from the new
            # arrays, as rank 0's were taken from the same arrays (_fit_checks): every rank holds
            # the same bounds and refuses the same updates
            self._checked()
            progress = progress and comm.Get_rank() == 0
        validate = None
        if val is not None:
            if dp is None:
                def validate():
                    return self._evaluate(*val)
            else:
                def validate():
                    return distributed.global_scores(comm, lambda: (self._evaluate(*val), val[0].shape[0]),
                                                     "validation")
        return training.fit_epochs(self, X, T, epochs, batch_size, mode, shuffle, rng, progress, verbose,
                                   callbacks, validate, dp)

    def _fit_checks(self, X, y, epochs, batch_size, mode, shuffle, validation_data, validation_split, rng):
        """fit's arguments validated: (epochs, batch_size, X, T, validation pair or
        None, random Generator)."""
        epochs = positive_int(epochs, "epochs")
        batch_size = positive_int(batch_size, "batch_size")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._checked()  # before anything is sized, or sent to other ranks, from the layers
        state = self.step_state
        state.exact_bounds(self)  # in-place writes since the last step are looked at here (see Notes)
        X, T = self._check_xy(X, y, whole=True)
        state.x_max = max(self._k.max_abs(kernel_ready(X[s:s + _PREDICT_CHUNK]))  # every batch's bound
                          for s in range(0, X.shape[0], _PREDICT_CHUNK))
        val = None
        if validation_split is not None:
            if validation_data is not None:
                raise ValueError("give validation_data or validation_split, not both")
            split = X.shape[0] - held_out(validation_split, X.shape[0])
            X, T, val = X[:split], T[:split], (X[split:], T[split:])
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                got = type(validation_data).__name__
                if isinstance(validation_data, (tuple, list)):
                    got += f" of length {len(validation_data)}"
                raise TypeError(f"validation_data must be a pair (X_val, y_val), got a {got}")
            try:
                val = self._check_xy(*validation_data, whole=True)
            except (TypeError, ValueError) as exc:  # say which X and y were wrong
                raise type(exc)(f"validation_data: {exc}") from None
        rng = random_generator(rng)
        return epochs, batch_size, X, T, val, rng

    # -- inference ----------------------------------------------------------------------
    def _outputs(self, X):
        """Network outputs for validated X, computed in chunks, as a new array.

        Inference does not check the whole state (``_checked``, 2.5 us a call,
        4% of a one-row predict): each layer checks what its kernels index,
        its parameters and the width and dtype of its input, as it runs."""
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        for s in range(0, X.shape[0], _PREDICT_CHUNK):
            out[s:s + _PREDICT_CHUNK] = self._forward(kernel_ready(X[s:s + _PREDICT_CHUNK]))
        return out

    @_inference
    def predict(self, X):
        """Predictions: class labels for the classification losses (shape
        (n,) for softmax, (n, C) or (n,) for binary), outputs for regression."""
        return self.loss.predict(self._outputs(self._check_x(X, whole=True)))

    @_inference
    def predict_proba(self, X):
        """Class probabilities (softmax or sigmoid of the logits), shape (n, C)."""
        if not self.loss.is_classifier:
            raise TypeError(f"predict_proba needs a classification loss, not {self.loss!r}")
        return self.loss.predict_proba(self._outputs(self._check_x(X, whole=True)))

    @_inference
    def evaluate(self, X, y, comm=None):
        """The loss (and accuracy, for classification) on ``X``, ``y`` as a dict.

        With an mpi4py ``comm``, ``X``, ``y`` are this rank's shard and every
        rank gets the means over all the ranks' samples."""
        if comm is None:
            return self._evaluate(*self._check_xy(X, y, whole=True))
        from fastnet import distributed

        def local():
            x, t = self._check_xy(X, y, whole=True)
            return self._evaluate(x, t), x.shape[0]

        return distributed.global_scores(distributed.check_comm(comm), local, "evaluate")

    def _evaluate(self, X, T):
        out = self._outputs(X)
        scores = {"loss": float(self._k.loss_value(self.loss.code, out, T))}
        if self.loss.is_classifier:
            scores["accuracy"] = self.loss.accuracy(out, T)
        return scores

    # -- persistence ----------------------------------------------------------------------
    @_serialised
    def save(self, path, comm=None):
        """Write the network to ``path`` (``.npz`` is appended if missing); see
        ``fastnet.serialization``.  Returns the path written.

        With an mpi4py ``comm`` (a checkpoint of data-parallel training, whose
        replicas are identical), only rank 0 writes; every rank returns the
        path, or raises if the write failed."""
        from fastnet.serialization import save_network

        if comm is None:
            return save_network(self, path)
        from fastnet import distributed

        return distributed.on_root(distributed.check_comm(comm), lambda: save_network(self, path), "save")

    @classmethod
    def load(cls, path, backend=None):
        """Read a network written by ``save``; refuses pickled or malformed files."""
        from fastnet.serialization import load_network

        return load_network(path, backend=backend)

    def __repr__(self):
        sizes = "-".join(str(s) for s in [self.n_inputs] + [la.neurons_num for la in self.layers])
        return (f"NeuralNetwork({sizes}, loss={self.loss!r}, optimizer={self.optimizer!r}, "
                f"dtype={self.dtype.name}, backend={self.backend!r})")

