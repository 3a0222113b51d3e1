"""fit's callbacks (fastnet.callbacks), validation_split and verbose."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.callbacks import Callback, EarlyStopping, LearningRateScheduler


def _net(backend="numpy", lr=0.1):
    return fn.NeuralNetwork([fn.DenseLayer("tanh", 4, neurons_num=8, rng=0),
                             fn.DenseLayer("identity", neurons_num=3, rng=1)],
                            "softmax_xent", fn.SGD(lr, momentum=0.5), backend=backend)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


class Recorder(Callback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_train_begin(self, network):
        self.events.append(("begin", network))

    def on_epoch_begin(self, epoch, logs):
        self.events.append(("epoch_begin", epoch, dict(logs)))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch_end", epoch, dict(logs)))
        return epoch == self.stop_at

    def on_train_end(self, network):
        self.events.append(("end", network))


def test_hooks_run_in_order_with_the_epochs_figures():
    X, y = _data()
    net, rec = _net(), Recorder()
    hist = net.fit(X, y, epochs=3, batch_size=16, validation_data=(X[:20], y[:20]), progress=False,
                   rng=0, callbacks=[rec])
    kinds = [e[0] for e in rec.events]
    assert kinds == ["begin"] + ["epoch_begin", "epoch_end"] * 3 + ["end"]
    assert rec.events[0][1] is net and rec.events[-1][1] is net
    ends = [e for e in rec.events if e[0] == "epoch_end"]
    assert [e[1] for e in ends] == [1, 2, 3]
    for (_, _, logs), i in zip(ends, range(3), strict=True):
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert logs[key] == hist[key][i]
        assert logs["lr"] == 0.1 and logs["seconds"] > 0


def test_a_callback_returning_true_stops_after_that_epoch():
    X, y = _data()
    net = _net()
    hist = net.fit(X, y, epochs=10, batch_size=16, progress=False, rng=0, callbacks=[Recorder(stop_at=4)])
    assert len(hist["loss"]) == 4
    # the parameters are those of epoch 4's last step: the same as a 4-epoch fit
    ref = _net()
    ref.fit(X, y, epochs=4, batch_size=16, progress=False, rng=0)
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_callbacks_share_one_logs_dict_in_order():
    seen = []

    class Adds(Callback):
        def on_epoch_end(self, epoch, logs):
            logs["extra"] = 10 * epoch

    class Reads(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(logs["extra"])

    X, y = _data()
    _net().fit(X, y, epochs=2, progress=False, rng=0, callbacks=[Adds(), Reads()])
    assert seen == [10, 20]


def test_on_train_end_runs_when_fit_raises():
    class Boom(Recorder):
        def on_epoch_end(self, epoch, logs):
            super().on_epoch_end(epoch, logs)
            raise RuntimeError("from the callback")

    X, y = _data()
    rec = Boom()
    with pytest.raises(RuntimeError, match="from the callback"):
        _net().fit(X, y, epochs=3, progress=False, rng=0, callbacks=[rec])
    assert rec.events[-1][0] == "end"


class _Replace(Callback):
    """At the end of epoch 1, replaces what ``replace(network)`` replaces."""

    def __init__(self, net, replace):
        self.net, self.replace = net, replace

    def on_epoch_end(self, epoch, logs):
        if epoch == 1:
            self.replace(self.net)
        return False


_PATHS = [("numpy", 16, "sgd"), ("numpy", 300, "gd"), ("numba", 4, "sgd"), ("numba", 64, "sgd"),
          ("numba", 64, "gd")]  # on numba: the fused step's tiles, its BLAS products, full batch


@pytest.mark.parametrize("backend, batch, mode", _PATHS)
@pytest.mark.parametrize("what", ["weights", "optimizer"])
def test_state_a_callback_replaces_is_what_the_next_epochs_train(backend, batch, mode, what):
    """The next epochs train the arrays and optimizer the callback put in place:
    exactly as two fits with the replacement between them (same shuffles, the
    same arithmetic in the same order, so equal bit for bit)."""
    if backend == "numba":
        pytest.importorskip("numba")
    X, y = _data(n=300)

    def replace(net):
        if what == "weights":
            net.layers[0].w = np.full_like(net.layers[0].w, 0.01)
        else:
            net.optimizer = fn.SGD(0.05, momentum=0.9)

    net = _net(backend)
    net.fit(X, y, epochs=3, batch_size=batch, mode=mode, progress=False, rng=np.random.default_rng(5),
            callbacks=[_Replace(net, replace)])
    twin, rng = _net(backend), np.random.default_rng(5)
    twin.fit(X, y, epochs=1, batch_size=batch, mode=mode, progress=False, rng=rng)
    replace(twin)
    twin.fit(X, y, epochs=2, batch_size=batch, mode=mode, progress=False, rng=rng)
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(p, q)
    if what == "weights":
        assert not np.all(net.layers[0].w == np.float32(0.01))  # trained


@pytest.mark.parametrize("backend, batch, mode", _PATHS)
def test_wrong_state_a_callback_puts_in_place_is_refused_before_the_next_epoch(backend, batch, mode):
    if backend == "numba":
        pytest.importorskip("numba")
    X, y = _data(n=300)
    net, seen = _net(backend), {}

    def replace(net):
        seen["params"] = [p.copy() for p in net.parameters()[2:]]
        net.layers[0].w = np.zeros((2, 8), np.float32)  # 4 inputs: (4, 8) expected

    with pytest.raises(ValueError, match=r"layers\[0\]\.w must be a float32 array of shape \(4, 8\), got .*"
                                         r"shape \(2, 8\)"):
        net.fit(X, y, epochs=3, batch_size=batch, mode=mode, progress=False, rng=0,
                callbacks=[_Replace(net, replace)])
    for p, q in zip(net.parameters()[2:], seen["params"], strict=True):
        np.testing.assert_array_equal(p, q)  # nothing trained after the replacement


@pytest.mark.parametrize("backend, batch, mode", _PATHS)
def test_layers_a_callback_puts_in_place_that_do_not_take_the_data_are_refused(backend, batch, mode):
    """Layers of another input width (and an optimizer for them) pass the
    network's own check, but not fit's data: refused at the next epoch's start,
    naming both, before any step on them."""
    if backend == "numba":
        pytest.importorskip("numba")
    X, y = _data(n=300)
    net = _net(backend)

    def replace(net):
        net.layers = [fn.DenseLayer("tanh", 6, neurons_num=8, rng=0),
                      fn.DenseLayer("identity", 8, neurons_num=3, rng=1)]
        net.optimizer = fn.SGD(0.1)

    with pytest.raises(ValueError, match="fit's data has 4 inputs and 3 outputs per row in float32, but the "
                                         "network now takes 6 and gives 3 in float32"):
        net.fit(X, y, epochs=3, batch_size=batch, mode=mode, progress=False, rng=0,
                callbacks=[_Replace(net, replace)])
    assert net.optimizer.state is None  # no step on the new layers


@pytest.mark.parametrize("bad, error", [(Recorder(), TypeError), ([object()], TypeError),
                                        ([lambda e, logs: False], TypeError)])
def test_bad_callbacks_are_refused_before_training(bad, error):
    X, y = _data()
    net = _net()
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(error, match="callbacks"):
        net.fit(X, y, progress=False, callbacks=bad)
    for a, b in zip(before, net.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


# -- EarlyStopping --------------------------------------------------------------------------------
class Scripted(Callback):
    """Writes a scripted figure into the logs, so EarlyStopping's rule is tested on known values."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key = values, key

    def on_epoch_end(self, epoch, logs):
        logs[self.key] = self.values[epoch - 1]


def test_early_stopping_waits_patience_epochs_then_restores_the_best():
    X, y = _data()
    net = _net()
    values = [1.0, 0.8, 0.85, 0.79, 0.9, 0.95, 0.7]  # best at 2 (0.79 is within min_delta of 0.8)
    snaps = []

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs):
            snaps.append([p.copy() for p in net.parameters()])

    es = EarlyStopping("val_loss", patience=3, min_delta=0.05)
    hist = net.fit(X, y, epochs=7, batch_size=16, progress=False, rng=0,
                   callbacks=[Snap(), Scripted(values), es])
    assert len(hist["loss"]) == 5 and es.stopped_epoch == 5
    assert es.best == 0.8 and es.best_epoch == 2
    for a, b in zip(net.parameters(), snaps[1], strict=True):
        np.testing.assert_array_equal(a, b)  # epoch 2's parameters are back
    net.train_step(X[:8], y[:8])  # and the network trains on from them (its state re-checked)


def test_early_stopping_max_mode_and_no_restore():
    X, y = _data()
    net = _net()
    es = EarlyStopping("val_accuracy", patience=1, restore_best=False)
    assert es.mode == "max"
    net.fit(X, y, epochs=5, progress=False, rng=0, callbacks=[Scripted([0.5, 0.6, 0.55], "val_accuracy"), es])
    assert es.best_epoch == 2 and es.stopped_epoch == 3
    ref = _net()
    ref.fit(X, y, epochs=3, progress=False, rng=0)
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)  # the last epoch's, not restored


def test_early_stopping_names_what_is_logged_when_its_figure_is_missing():
    X, y = _data()
    with pytest.raises(ValueError, match="val_loss.*'accuracy', 'loss'"):
        _net().fit(X, y, epochs=2, progress=False, callbacks=[EarlyStopping()])


@pytest.mark.parametrize("kwargs", [dict(patience=0), dict(min_delta=-1), dict(mode="up"), dict(monitor=3)])
def test_early_stopping_checks_its_arguments(kwargs):
    with pytest.raises((TypeError, ValueError)):
        EarlyStopping(**kwargs)


# -- LearningRateScheduler ------------------------------------------------------------------------
def test_schedule_sets_each_epochs_rate():
    X, y = _data()
    net = _net()
    net.fit(X, y, epochs=3, batch_size=16, progress=False, rng=np.random.default_rng(5),
            callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 / epoch)])
    # the same as three one-epoch fits with the rate set by hand (one shuffling stream)
    ref, rng = _net(), np.random.default_rng(5)
    for epoch in (1, 2, 3):
        ref.optimizer.lr = 0.1 / epoch
        ref.fit(X, y, epochs=1, batch_size=16, progress=False, rng=rng)
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert net.optimizer.lr == pytest.approx(0.1 / 3)


def test_a_schedule_returning_a_bad_rate_is_named():
    X, y = _data()
    with pytest.raises(ValueError, match="LearningRateScheduler.*epoch 2"):
        _net().fit(X, y, epochs=3, progress=False,
                   callbacks=[LearningRateScheduler(lambda e, lr: 0.1 if e < 2 else float("nan"))])


# -- validation_split and verbose -----------------------------------------------------------------
def test_validation_split_holds_out_the_last_part():
    X, y = _data(n=100)
    a, b = _net(), _net()
    ha = a.fit(X, y, epochs=2, progress=False, rng=0, validation_split=0.25)
    hb = b.fit(X[:75], y[:75], epochs=2, progress=False, rng=0, validation_data=(X[75:], y[75:]))
    assert ha == hb


@pytest.mark.parametrize("split, error", [(0.0, ValueError), (1.0, ValueError), ("0.2", TypeError),
                                          (0.999, ValueError)])  # 0.999 of 100 leaves no sample to train on
def test_validation_split_is_checked(split, error):
    X, y = _data(n=100)
    with pytest.raises(error, match="validation_split"):
        _net().fit(X, y, progress=False, validation_split=split)


def test_validation_split_and_data_together_are_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="not both"):
        _net().fit(X, y, progress=False, validation_split=0.2, validation_data=(X, y))


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = _data()
    _net().fit(X, y, epochs=3, progress=False, rng=0, verbose=1, validation_split=0.2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3 - ") and "loss: " in lines[0] and "val_accuracy: " in lines[0]
    _net().fit(X, y, epochs=3, progress=False, rng=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="verbose"):
        _net().fit(X, y, progress=False, verbose=2)
