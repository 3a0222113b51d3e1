"""The reference kernels: plain NumPy, complete and obviously correct.

Every compiled kernel of fastnet is checked against these functions.  The
contract they all follow:

* positional arguments only; arrays are C-contiguous and share one float dtype
  (float32 or float64) per call; scalars are Python numbers;
* results are written into arrays passed in (``out`` buffers owned by the
  caller) and those arrays are returned;
* no validation: the caller (``fastnet``) has checked shapes, dtypes and
  values before the call;
* activations and losses are selected by the integer ``kind`` codes of
  ``fastnet.kernels.ACTIVATIONS`` and ``fastnet.kernels.LOSSES``.

Shapes: ``B`` is the batch size, ``n_in`` the number of inputs of a layer,
``n_out`` its number of neurons, ``C`` the number of outputs of a network.
"""

import numpy as np

from . import ACTIVATION_CODES, LOSS_CODES

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SOFTPLUS, GELU = (
    ACTIVATION_CODES[name]
    for name in ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu")
)
MSE, SOFTMAX_XENT, BCE_LOGITS = (LOSS_CODES[name] for name in ("mse", "softmax_xent", "bce_logits"))

# GELU, tanh form: 0.5 a (1 + tanh(u)), u = c (a + k a^3).  Computed as
# a * sigmoid(2u), the same function (0.5 (1 + tanh(u)) = sigmoid(2u)), because
# 1 + tanh(u) cancels catastrophically for negative u while the stable sigmoid
# does not; likewise f' = s + a * 2 u'(a) * s * (1 - s), with s = sigmoid(2u) and
# 1 - s = sigmoid(-2u) each computed without cancellation.  Beyond |a| = 10,
# sigmoid(2u) is 0 or 1 to float64 precision, so the cubic is evaluated on a
# clipped copy of ``a``: the same results, and no overflow for huge inputs.
_GELU_C = float(np.sqrt(2.0 / np.pi))
_GELU_K = 0.044715
_GELU_CLIP = 10.0


def _stable_sigmoid(a, out):
    """out = 1 / (1 + exp(-a)) without overflow: exp is only taken of -|a|."""
    e = np.exp(-np.abs(a))
    out[...] = np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def _gelu_parts(a):
    """(clipped a, sigmoid(2u), sigmoid(-2u)) for GELU."""
    ac = np.clip(a, -_GELU_CLIP, _GELU_CLIP)
    u2 = 2 * _GELU_C * (ac + _GELU_K * ac * ac * ac)
    return ac, _stable_sigmoid(u2, np.empty_like(a)), _stable_sigmoid(-u2, np.empty_like(a))


def activation_forward(kind, alpha, a, y):
    """Apply activation ``kind`` elementwise: ``y = f(a)``.

    a, y : arrays of one shape and dtype.  Reads ``a``, overwrites ``y``
    (``y`` may be ``a``).  ``alpha`` is the slope of leaky_relu and the scale
    of elu; other activations ignore it.  Returns ``y``.
    """
    if kind == IDENTITY:
        y[...] = a
    elif kind == SIGMOID:
        _stable_sigmoid(a, y)
    elif kind == TANH:
        np.tanh(a, out=y)
    elif kind == RELU:
        np.maximum(a, 0, out=y)
    elif kind == LEAKY_RELU:
        y[...] = np.where(a > 0, a, alpha * a)
    elif kind == ELU:
        y[...] = np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0)))
    elif kind == SOFTPLUS:
        # log(1 + e^a) = max(a, 0) + log1p(e^-|a|): no overflow for large |a|.
        y[...] = np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))
    elif kind == GELU:
        ac, s, _ = _gelu_parts(a)
        y[...] = np.where(a >= 0, a, ac) * s  # ac: a * s is 0 below -10, not a * 1e-38
    else:
        raise ValueError(f"unknown activation code {kind}")
    return y


def activation_derivative(kind, alpha, a, out):
    """Derivative of activation ``kind`` with respect to its input: ``out = f'(a)``.

    a, out : arrays of one shape and dtype.  Reads ``a``, overwrites ``out``.
    At a = 0 relu and leaky_relu take the derivative of the left side.
    Returns ``out``.
    """
    if kind == IDENTITY:
        out[...] = 1
    elif kind == SIGMOID:
        _stable_sigmoid(a, out)
        out *= 1 - out
    elif kind == TANH:
        t = np.tanh(a)
        out[...] = 1 - t * t
    elif kind == RELU:
        out[...] = a > 0
    elif kind == LEAKY_RELU:
        out[...] = np.where(a > 0, 1, alpha)
    elif kind == ELU:
        out[...] = np.where(a > 0, 1, alpha * np.exp(np.minimum(a, 0)))
    elif kind == SOFTPLUS:
        _stable_sigmoid(a, out)
    elif kind == GELU:
        ac, s, sm = _gelu_parts(a)
        out[...] = s + ac * (s * sm) * (2 * _GELU_C * (1 + 3 * _GELU_K * ac * ac))
    else:
        raise ValueError(f"unknown activation code {kind}")
    return out


def activation_grad(kind, alpha, a, y, dy, dz):
    """Chain rule through the activation: ``dz = dy * f'(a)``.

    a, y, dy, dz : (B, n) arrays of one dtype, ``y = f(a)`` as computed by
    ``activation_forward``.  Sigmoid and tanh read their derivative from ``y``
    (s' = s (1 - s), tanh' = 1 - tanh^2); the others from ``a``.  Overwrites
    ``dz`` (which may be ``dy``).  Returns ``dz``.
    """
    if kind == SIGMOID:
        dz[...] = dy * y * (1 - y)
    elif kind == TANH:
        dz[...] = dy * (1 - y * y)
    else:
        d = activation_derivative(kind, alpha, a, np.empty_like(a))
        dz[...] = dy * d
    return dz


def dense_forward(x, w, b, kind, alpha, a, y):
    """Forward pass of a dense layer: ``a = x @ w + b``, ``y = f(a)``.

    x : (B, n_in), w : (n_in, n_out), b : (1, n_out), a, y : (B, n_out).
    Reads x, w, b; overwrites a and y.  Returns ``y``.
    """
    np.matmul(x, w, out=a)
    a += b
    return activation_forward(kind, alpha, a, y)


def dense_backward(x, a, y, dy, kind, alpha, dz, dw, db):
    """Parameter gradients of a dense layer, averaged over the batch.

    x : (B, n_in) the layer's input, a, y : (B, n_out) from ``dense_forward``,
    dy : (B, n_out) per-sample gradient of the loss with respect to y.
    Overwrites dz (B, n_out) with ``dy * f'(a)``, dw (n_in, n_out) with
    ``x.T @ dz / B`` and db (1, n_out) with the column mean of dz.  The input
    gradient is a separate kernel, ``input_grad``, because the first layer of
    a network does not need it.  Returns ``dw``.
    """
    activation_grad(kind, alpha, a, y, dy, dz)
    n = x.shape[0]
    np.matmul(x.T, dz, out=dw)
    dw /= n
    np.sum(dz, axis=0, keepdims=True, out=db)
    db /= n
    return dw


def input_grad(dz, w, dx):
    """Gradient with respect to a dense layer's input: ``dx = dz @ w.T``.

    dz : (B, n_out), w : (n_in, n_out), dx : (B, n_in), overwritten.  Per
    sample, not averaged.  Returns ``dx``.
    """
    np.matmul(dz, w.T, out=dx)
    return dx


def dense_backward_sgd(x, a, y, dy, kind, alpha, dz, dw, db, dx, w, lr):
    """A dense layer's backward pass with a plain SGD step on w (no momentum,
    no weight decay).

    As ``dense_backward`` followed by ``input_grad`` (into dx, unless dx is
    None) with the weights before the step, and then ``w -= lr * dw`` with
    ``dw = x.T @ dz / B``.  dw is scratch space: an implementation need not
    materialise the gradient there, and its content afterwards is unspecified.
    Overwrites dz and db as ``dense_backward`` does; the bias step is left to
    the caller (``sgd_step`` on b and db).  Returns dx.
    """
    dense_backward(x, a, y, dy, kind, alpha, dz, dw, db)
    if dx is not None:
        input_grad(dz, w, dx)
    sgd_step(w, dw, w[:0], lr, 0.0, 0.0, False)
    return dx


def check_and_one_hot(x, labels, t):
    """Validate a batch of inputs and class labels and build one-hot targets.

    x : (B, n) float, C-contiguous; labels : (B,) int64; t : (B, C) float,
    overwritten with one-hot rows only when every value of x is finite and
    every label is in [0, C).  Returns whether they are (False leaves t as it
    was): the caller then finds and reports what is wrong.
    """
    if not np.isfinite(x).all() or (labels.size and (labels.min() < 0 or labels.max() >= t.shape[1])):
        return False
    t.fill(0)
    t[np.arange(t.shape[0]), labels] = 1
    return True


def softmax(z, out):
    """Row-wise softmax of logits z (B, C) into out (B, C); stable for large |z|."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out[...] = e / e.sum(axis=1, keepdims=True)
    return out


def loss_value(kind, z, t):
    """Mean over the batch of the per-sample loss; returns a scalar of z's dtype.

    z : (B, C) network outputs (logits for the cross-entropies), t : (B, C)
    targets of the same dtype.  Per-sample losses:

    * mse: mean over the C outputs of (z - t)^2;
    * softmax_xent: logsumexp(z) - z . t (t one-hot or a distribution);
    * bce_logits: mean over the C outputs of log(1 + e^z) - t z.
    """
    if kind == MSE:
        return np.mean((z - t) ** 2)
    if kind == SOFTMAX_XENT:
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        return np.mean(lse - (z * t).sum(axis=1))
    if kind == BCE_LOGITS:
        softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
        return np.mean(softplus - t * z)
    raise ValueError(f"unknown loss code {kind}")


def loss_grad(kind, z, t, out):
    """Per-sample gradient of the loss of ``loss_value`` with respect to z.

    z, t, out : (B, C) of one dtype; overwrites ``out``.  Not divided by B:
    the layers average their parameter gradients over the batch.  The
    cross-entropies take logits, which is why their gradients are the simple
    ``softmax(z) - t`` and ``(sigmoid(z) - t) / C``: the output layer's
    activation must be the identity for these to be right.  Returns ``out``.
    """
    c = z.shape[1]
    if kind == MSE:
        out[...] = 2 * (z - t) / c
    elif kind == SOFTMAX_XENT:
        softmax(z, out)
        out -= t
    elif kind == BCE_LOGITS:
        _stable_sigmoid(z, out)
        out -= t
        out /= c
    else:
        raise ValueError(f"unknown loss code {kind}")
    return out


def flush_subnormal(a):
    """Set the subnormal values of ``a`` (0 < |a| < the smallest normal float)
    to zero, in place; NaN and inf stay.  Returns ``a``.

    Optimizer state decaying geometrically under a zero gradient (momentum
    0.9 on a dead ReLU unit, Adam's moments) otherwise ends in subnormals,
    where x86 arithmetic is about 100 times slower; and it stays there,
    because 0.9 times the smallest subnormal rounds back to itself (measured:
    a momentum-SGD step of a 784-256-256-10 MLP went from 0.42 to 2.4 ms).
    """
    a[np.abs(a) < np.finfo(a.dtype).tiny] = 0
    return a


def sgd_step(p, g, v, lr, momentum, weight_decay, nesterov):
    """One SGD update of parameter p in place, with optional momentum.

    d = g + weight_decay * p;  v = momentum * v + d, its subnormals flushed to
    zero (see ``flush_subnormal``);
    p -= lr * (d + momentum * v if nesterov else v)   (v = d when momentum = 0).
    p, g : arrays of one shape and dtype; v : the velocity, same shape, updated
    in place (not read when momentum is 0, and may then be empty).  Returns p.
    """
    d = g + weight_decay * p
    if momentum != 0:
        v *= momentum
        v += d
        flush_subnormal(v)
        d = d + momentum * v if nesterov else v
    p -= lr * d
    return p


def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, t):
    """One Adam update of parameter p in place (Kingma and Ba, 2015).

    d = g + weight_decay * p;  m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2
    (m and v with their subnormals flushed to zero, see ``flush_subnormal``);
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    p, g, m, v : arrays of one shape and dtype; m, v updated in place; t >= 1
    is the step number.  Returns p.
    """
    d = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * d
    flush_subnormal(m)
    v *= beta2
    v += (1 - beta2) * d * d
    flush_subnormal(v)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def running_mean(acc, g, frac):
    """Fold g into a running mean: ``acc += frac * (g - acc)``.

    With ``frac = n / (n_seen + n)`` for a chunk of n samples, acc stays the
    mean over all samples seen, whatever the chunk sizes.  Returns acc.
    """
    acc += frac * (g - acc)
    return acc


def fused_sgd_step(x, t, ws, bs, vws, vbs, kinds, alphas, as_, ys, gs, loss_kind, lr, momentum,
                   weight_decay, nesterov):
    """One SGD training step of a stack of dense layers; returns the batch loss.

    The composition the JIT path fuses into one compiled call: forward through
    every layer, the loss and its gradient, then, from the last layer down,
    dz = g * f'(a), the input gradient for the layer below (with the weights
    before their update), and the SGD update of w and b.

    x : (B, n_0) input; t : (B, C) targets; ws, bs : tuples of each layer's
    w (n_l-1, n_l) and b (1, n_l), updated in place; vws, vbs : their
    velocities (read and updated only when momentum is not 0, else empty);
    kinds : int64 array of activation codes; alphas : float64 array;
    as_, ys, gs : tuples of (B, n_l) workspaces, overwritten with each layer's
    pre-activation, output and dz.  A loss that is not finite is returned
    before anything is updated.
    """
    n_layers = len(ws)
    inp = x
    for i in range(n_layers):
        dense_forward(inp, ws[i], bs[i], int(kinds[i]), float(alphas[i]), as_[i], ys[i])
        inp = ys[i]
    loss = loss_value(loss_kind, ys[-1], t)
    if not np.isfinite(loss):
        return loss
    loss_grad(loss_kind, ys[-1], t, gs[-1])
    for i in range(n_layers - 1, -1, -1):
        x_i = x if i == 0 else ys[i - 1]
        g = gs[i]
        activation_grad(int(kinds[i]), float(alphas[i]), as_[i], ys[i], g, g)
        dw = x_i.T @ g / x.shape[0]
        db = g.sum(axis=0, keepdims=True) / x.shape[0]
        if i > 0:
            input_grad(g, ws[i], gs[i - 1])
        sgd_step(ws[i], dw, vws[i], lr, momentum, weight_decay, nesterov)
        sgd_step(bs[i], db, vbs[i], lr, momentum, weight_decay, nesterov)
    return loss
