"""A count of the changes, anywhere in the process, to what the networks' state
checks look at (``_checks.StateChecks._checked``).

Every assignment that can change a network's execution plan counts one: a
layer's ``w``, ``b``, ``neurons_num``, ``n_inputs``, ``dtype``, ``activation``
or ``backend``; a network's ``layers``, ``loss``, ``optimizer`` or
``backend``; an optimizer's hyperparameters and ``state``; and any change to
the lists (and Adam's dict) that hold the layers and the optimizer state,
which are kept as ``WatchedList`` and ``WatchedDict`` for that.  A check
reads the count before it looks, so a change made while it looks (from
another thread) is looked at by the next check.  A network
whose last check saw the count it sees now has nothing to check again: one
comparison per step, where comparing the identities of every object of the
state cost 1.4 us, and 6.2 us with the caches cold, as a step leaves them at
B = 1 (3% of a 784-256-256-10 step; Emerald Rapids).

Values written into arrays in place are not changes here (their shapes and
dtypes cannot change that way).  A plain list or dict assigned as ``layers``
or ``state`` is copied into a watched one: changing the original afterwards
changes nothing of the network's.
"""

__all__ = ["COUNT", "Watched", "WatchedDict", "WatchedList", "changed", "watched"]


class _Count:
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


#: ``COUNT.n``: the number of changes so far in this process.
COUNT = _Count()


def changed():
    """Count one change."""
    COUNT.n += 1


class WatchedList(list):
    """A list whose every change in place counts as a change (``changed``)."""

    __slots__ = ()

    def __reduce__(self):  # pickled as its items, whatever pickle protocol
        return type(self), (list(self),)


def _counting(name):
    method = getattr(list, name)

    def counted(self, *args):
        changed()
        return method(self, *args)

    counted.__name__ = name
    return counted


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop",
              "remove", "clear", "sort", "reverse"):
    setattr(WatchedList, _name, _counting(_name))


class WatchedDict(dict):
    """A dict whose every change in place counts, with its list values kept as
    ``WatchedList``.  Adam's step count is set by ``dict.__setitem__``, not
    counted: its step checks it itself."""

    __slots__ = ()

    def __init__(self, items=()):
        super().__init__((k, watched(v)) for k, v in dict(items).items())

    def __reduce__(self):
        return type(self), (dict(self),)

    def __setitem__(self, key, value):
        changed()
        super().__setitem__(key, watched(value))

    def __delitem__(self, key):
        changed()
        super().__delitem__(key)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other):
        self.update(other)
        return self

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, *args):
        changed()
        return super().pop(*args)

    def popitem(self):
        changed()
        return super().popitem()

    def clear(self):
        changed()
        super().clear()


def watched(value):
    """``value`` as a watched container when it is a list or dict that is not
    one yet (a copy), otherwise itself."""
    if isinstance(value, list) and type(value) is not WatchedList:
        return WatchedList(value)
    if isinstance(value, dict) and type(value) is not WatchedDict:
        return WatchedDict(value)
    return value


class Watched:
    """An attribute whose every assignment counts as a change, lists and dicts
    kept watched.  It defines no ``__get__``: reading the attribute is the
    plain lookup in the instance's ``__dict__``, at no cost."""

    def __set_name__(self, owner, name):
        self.name = name

    def __set__(self, obj, value):
        obj.__dict__[self.name] = watched(value)
        changed()
