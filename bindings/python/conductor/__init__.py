"""Conductor: distributed training of machine-learning models, embedded in Python.

The classes and functions are libconductor's C++ API under the same names (see
libconductor/include/conductor/*.hpp and the stub __init__.pyi). This file only adds what
Python users expect on top:

- Server and Client take their options as keyword arguments, are context managers (enter
  starts, exit stops and joins), and their run() returns on Ctrl-C;
- Server.predict() waits for the ensemble and returns it (start_prediction() and
  prediction() are the C++ pair, predict() and prediction());
- Server.stored_models() iterates over accepted models as they arrive.

Everything that waits does so in slices of at most 0.1 s with the GIL released, so Ctrl-C
(KeyboardInterrupt) and other Python threads are served while it waits.
"""

import threading
import time

from . import _conductor
from ._conductor import (
    DEFAULT_MODEL_PATTERN,
    DEFAULT_PREDICTION_PATTERN,
    PREDICTION_QUEUE_LIMIT,
    ClientOptions,
    Command,
    ConfigError,
    Configuration,
    Controller,
    DatasetType,
    EnsembleResult,
    Error,
    ErrorCode,
    Evaluation,
    Explanation,
    IoError,
    ModelMeta,
    PackageError,
    PredictionFailure,
    PredictionValue,
    PredictOptions,
    ProcessError,
    ProtocolError,
    Requirement,
    ServerOptions,
    ServerStatus,
    StoredModel,
    TransportError,
    Version,
    VersionStatus,
    client_options_from_environment,
    default_authorized_keys,
    default_client_key_file,
    default_configuration,
    default_operator_key_file,
    default_server_key_file,
    default_server_workdir,
    detect_gpus,
    evaluate_model_folder,
    evaluate_results_csv,
    load_configuration,
    load_version_file,
    parse_prediction,
    public_key_of,
    read_training_metrics,
    save_configuration,
    save_version_file,
    split_gpu_list,
)

__all__ = [
    "DEFAULT_MODEL_PATTERN", "DEFAULT_PREDICTION_PATTERN", "PREDICTION_QUEUE_LIMIT",
    "Client", "ClientOptions", "Command", "ConfigError", "Configuration", "Controller",
    "DatasetType", "EnsembleResult", "Error", "ErrorCode", "Evaluation", "Explanation",
    "IoError", "ModelMeta", "PackageError", "PredictionFailure", "PredictionValue",
    "PredictOptions", "ProcessError", "ProtocolError", "Requirement", "Server", "ServerOptions",
    "ServerStatus", "StoredModel", "TransportError", "Version", "VersionStatus",
    "client_options_from_environment", "default_authorized_keys", "default_client_key_file",
    "default_configuration", "default_operator_key_file", "default_server_key_file",
    "default_server_workdir", "detect_gpus", "evaluate_model_folder", "evaluate_results_csv",
    "load_configuration", "load_version_file", "parse_prediction", "public_key_of",
    "read_training_metrics", "save_configuration", "save_version_file", "split_gpu_list",
    "to_csv",
]

__version__ = "0.1.0"

# Long enough to cost nothing, short enough that Ctrl-C feels immediate.
_SLICE_SECONDS = 0.1


def _with_fields(options, fields):
    """Sets `fields` on `options`; a name the options do not have is a TypeError, as for
    an unknown keyword argument."""
    for name, value in fields.items():
        if name.startswith("_") or not hasattr(options, name):
            raise TypeError(f"{type(options).__name__} has no field {name!r}")
        setattr(options, name, value)
    return options


def _deadline(timeout):
    return None if timeout is None else time.monotonic() + timeout


def _slice(deadline):
    """Seconds to wait next: a slice, or what is left before `deadline` (0 once past)."""
    if deadline is None:
        return _SLICE_SECONDS
    return max(0.0, min(_SLICE_SECONDS, deadline - time.monotonic()))


def to_csv(rows):
    """The text Server.predict sends as predictiondata.csv: `rows` as is when it is a str,
    else one line per row, its values joined by commas (numbers as str() writes them)."""
    if isinstance(rows, str):
        return rows if rows.endswith("\n") or not rows else rows + "\n"
    lines = []
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
        else:
            lines.append(",".join(str(value) for value in row))
    return "".join(line + "\n" for line in lines)


class _Runnable:
    """run() that Ctrl-C can end, and the context manager, for Server and Client alike."""

    def _init_runnable(self):
        self._stopping = threading.Event()

    def run(self):
        """Serves (Server) or works (Client) until stop() is called from another thread, or
        Ctrl-C; then stops. Raises Error when already started or closed."""
        self.start()
        try:
            while not self._stopping.wait(_SLICE_SECONDS):
                pass
        finally:
            self.stop()

    def stop(self):
        """Asks the loop to end and returns at once; close() also joins. Idempotent."""
        self._stopping.set()
        super().stop()

    def close(self):
        """Stops, then waits until every thread and process this object started has ended
        and its working folder is released. Later calls raise Error; close() itself may be
        called again."""
        self._stopping.set()
        super().close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


class Server(_Runnable, _conductor.Server):
    """The coordinator, embedded in this process; it serves on a thread of its own.

        with conductor.Server(workdir="run", bind="tcp://127.0.0.1:*") as server:
            server.add_version("examples/digits-ensemble")
            ...

    Keyword arguments are ServerOptions fields; `options` gives them all at once instead. An
    unset workdir is default_server_workdir() ($CONDUCTOR_WORKDIR, else ~/Conductor).
    Raises ConfigError for a broken config or version file, TransportError when the endpoint
    cannot be bound, IoError when the folder is unusable or another server uses it.
    """

    def __init__(self, options=None, **fields):
        if options is not None and fields:
            raise TypeError("give either options or keyword arguments, not both")
        if options is None:
            options = ServerOptions(**fields)
        if options.workdir is None:
            options.workdir = default_server_workdir()
        _conductor.Server.__init__(self, options)
        self._init_runnable()

    def start_prediction(self, rows, version=None, *, top=0, by="",
                         order=PredictOptions.Order.AUTO):
        """Starts an ensemble prediction over `rows` (see to_csv) and returns its request id
        for prediction(). version None: the current version. top > 0: only the best `top`
        models by the metric `by`. Raises Error (ErrorCode.ARGUMENT) for an unknown version,
        one without prediction commands or models, or a full queue."""
        options = PredictOptions(version=version or "", top=top, by=by, order=order)
        return _conductor.Server.predict(self, to_csv(rows), options)

    def predict(self, rows, version=None, *, top=0, by="", order=PredictOptions.Order.AUTO,
                timeout=None):
        """start_prediction(), then waits until every model answered or failed and returns
        the EnsembleResult. Raises TimeoutError when `timeout` seconds pass first (the
        request keeps running; the server gives up on it after its prediction_timeout)."""
        request = self.start_prediction(rows, version, top=top, by=by, order=order)
        return self.wait_prediction(request, timeout)

    def wait_prediction(self, request_id, timeout=None):
        """Waits for prediction(request_id) to complete and returns it. Raises TimeoutError
        when `timeout` seconds pass first, Error for an unknown request id."""
        deadline = _deadline(timeout)
        while True:
            # Returns the moment the request completes; the slices let Ctrl-C through.
            result = self.wait_for_prediction(request_id, _slice(deadline))
            if result is not None:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"prediction {request_id} not complete after {timeout} s")

    def stored_models(self, count=None, timeout=None):
        """Yields each model the server accepts, in arrival order (as next_stored_model()):
        `count` of them, or for ever when None. Raises TimeoutError when `timeout` seconds
        pass without a new model."""
        received = 0
        while count is None or received < count:
            deadline = _deadline(timeout)
            while True:
                model = self.next_stored_model(_slice(deadline))
                if model is not None:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no model accepted for {timeout} s "
                                       f"({received} received)")
            received += 1
            yield model


class Client(_Runnable, _conductor.Client):
    """A worker, embedded in this process; it works on a thread of its own and runs each
    item's commands as child processes.

        with conductor.Client(server=server.endpoint(), workdir="run/clients/1"):
            ...

    Keyword arguments are ClientOptions fields, over the defaults of
    client_options_from_environment(); `options` gives them all at once instead. Raises
    Error (ErrorCode.ARGUMENT) for a malformed server address, IoError when the working
    folder is unusable or another client uses it.
    """

    def __init__(self, options=None, **fields):
        if options is not None and fields:
            raise TypeError("give either options or keyword arguments, not both")
        if options is None:
            options = _with_fields(client_options_from_environment(), fields)
        _conductor.Client.__init__(self, options)
        self._init_runnable()
