"""Types and documentation of the conductor package (libconductor's C++ API for Python).

Names, fields and arguments are those of libconductor/include/conductor/*.hpp. Enum values
drop the C++ `k` prefix and are upper case (ErrorCode.kConfig -> ErrorCode.CONFIG).
Durations are datetime.timedelta when read and timedelta or float seconds when set; paths are
pathlib.Path when read and str or os.PathLike when set. List fields are copies: assign a new
list (version.training_commands = [...]) rather than appending to the one read.
"""

import datetime
import enum
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

_PathLike = Union[str, os.PathLike]
_Duration = Union[datetime.timedelta, float]
_Rows = Union[str, Iterable[Union[str, Sequence[Any]]]]

__version__: str
DEFAULT_MODEL_PATTERN: str
DEFAULT_PREDICTION_PATTERN: str
PREDICTION_QUEUE_LIMIT: int

# --- errors ---------------------------------------------------------------------------------

class ErrorCode(enum.Enum):
    CONFIG = 1
    PROTOCOL = 2
    PACKAGE = 3
    PROCESS = 4
    IO = 5
    TRANSPORT = 6
    ARGUMENT = 7

class Error(RuntimeError):
    """Every failure of the library; the message names what was refused and why. Invalid
    values, unknown versions and request ids raise Error itself with code ARGUMENT."""
    code: Optional[ErrorCode]

class ConfigError(Error):
    """A config.xml or version.xml is missing, malformed or invalid ("<file>:<line>: ...")."""

class ProtocolError(Error): ...
class PackageError(Error): ...
class ProcessError(Error): ...

class IoError(Error):
    """The file system refused, or a working folder is already in use."""

class TransportError(Error):
    """An endpoint could not be bound or connected, or a reply did not come in time."""

# --- versions and configuration -------------------------------------------------------------

class DatasetType(enum.Enum):
    GENERIC = 0
    CARGO2000 = 1

class Requirement(enum.Enum):
    """Which clients may run a version's items (<Requires>): any, CPU clients, GPU clients."""
    ANY = 0
    CPU = 1
    GPU = 2

class Command:
    """One executable and its arguments, split like a shell would but never run by one."""
    file_name: str
    arguments: str
    parameters: str
    def __init__(self, file_name: str = "", arguments: str = "", parameters: str = "") -> None: ...

class Version:
    """A named training setup: the commands that train one model, and how many models."""
    name: str
    created: str
    last_updated: str
    dataset_type: DatasetType
    status: str
    training_commands: list[Command]
    prediction_commands: list[Command]
    target_models: int
    model_pattern: str
    """Glob a result must match to be accepted (<ModelPattern>, default "*.h5")."""
    prediction_pattern: str
    """Regex whose first group is a prediction's value (default "PredictedBuffer=(\\S+)")."""
    prediction_output: str
    requirement: Requirement
    """Which clients may run its items (<Requires>, default ANY)."""
    def __init__(self, *, name: str = "", dataset_type: DatasetType = ...,
                 training_commands: Sequence[Command] = ...,
                 prediction_commands: Sequence[Command] = ..., target_models: int = 0,
                 model_pattern: str = ..., prediction_pattern: str = ...,
                 prediction_output: str = "", created: str = "", last_updated: str = "",
                 status: str = "", requirement: Requirement = ...) -> None: ...

class Configuration:
    """The contents of config/config.xml."""
    created: str
    last_updated: str
    versions: list[Version]
    current_version: Optional[Version]
    reserve_nodes: float
    def __init__(self) -> None: ...

def default_configuration() -> Configuration: ...
def load_configuration(file: _PathLike) -> Configuration:
    """Raises ConfigError "<file>:<line>: <problem>"."""
def save_configuration(config: Configuration, file: _PathLike) -> None:
    """Atomic; raises IoError or ConfigError."""
def load_version_file(file: _PathLike) -> Version:
    """Raises ConfigError "<file>:<line>: <problem>"."""
def save_version_file(version: Version, file: _PathLike) -> None: ...

# --- models, metrics, predictions -----------------------------------------------------------

_Metrics = list[tuple[str, float]]

class ModelMeta:
    """What the server recorded about one model (meta.xml); dict(meta.metrics) for lookup."""
    item_id: str
    duration_seconds: float
    epochs: int
    last_epoch_seconds: float
    node_name: str
    os: str
    processing_unit: str
    container_version: str
    timestamp: str
    attempt: int
    metrics: _Metrics
    def __init__(self) -> None: ...

class StoredModel:
    """A model the server accepted: assets/<version>/models/<id> and its meta.xml."""
    @property
    def version(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def folder(self) -> Path: ...
    @property
    def meta(self) -> ModelMeta: ...
    @property
    def meta_error(self) -> str:
        """Why meta could not be read (the file, and the line for bad XML); "" when it was."""
        ...

class Evaluation:
    @property
    def metrics(self) -> _Metrics: ...
    @property
    def problems(self) -> list[str]: ...

def read_training_metrics(model_folder: _PathLike) -> _Metrics: ...
def evaluate_results_csv(csv: _PathLike, type: DatasetType) -> Optional[_Metrics]: ...
def evaluate_model_folder(folder: _PathLike, type: DatasetType) -> Evaluation: ...

class PredictionValue:
    @property
    def model_id(self) -> str: ...
    @property
    def value(self) -> float: ...

class PredictionFailure:
    @property
    def model_id(self) -> str: ...
    @property
    def reason(self) -> str: ...

class EnsembleResult:
    """Every model's answer to one request; statistics over the values that arrived."""
    @property
    def request_id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def complete(self) -> bool: ...
    @property
    def expected(self) -> int: ...
    @property
    def values(self) -> list[PredictionValue]: ...
    @property
    def failures(self) -> list[PredictionFailure]: ...
    @property
    def mean(self) -> float: ...
    @property
    def median(self) -> float: ...
    @property
    def stddev(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...

def parse_prediction(output: str, pattern: str) -> Optional[float]: ...

class PredictOptions:
    """Which models answer a prediction: all (top 0) or the best `top` by metric `by`."""
    class Order(enum.Enum):
        AUTO = 0
        HIGHER_IS_BETTER = 1
        LOWER_IS_BETTER = 2
    version: str
    top: int
    by: str
    order: PredictOptions.Order
    def __init__(self, *, version: str = "", top: int = 0, by: str = "",
                 order: PredictOptions.Order = ...) -> None: ...

# --- server -----------------------------------------------------------------------------------

class ServerOptions:
    class Security(enum.Enum):
        """AUTO: CurveZMQ unless `bind` is loopback, ipc or inproc."""
        AUTO = 0
        CURVE = 1
        INSECURE = 2
    workdir: Optional[Path]
    """None: not given (Server then uses default_server_workdir())."""
    bind: str
    """ZeroMQ endpoint, default "tcp://*:8080"; "tcp://127.0.0.1:*" picks a free port."""
    heartbeat_interval: datetime.timedelta
    liveness: int
    training_timeout: datetime.timedelta
    prediction_timeout: datetime.timedelta
    reconcile_interval: datetime.timedelta
    lease_grace: datetime.timedelta
    """How long a silent client's item waits for it; 0: 2 x heartbeat_interval x liveness."""
    log_to_stdout: bool
    security: ServerOptions.Security
    key_file: Optional[Path]
    """None: <workdir>/config/server.key, made when missing."""
    authorized_keys: Optional[Path]
    """None: <workdir>/config/authorized_keys (one client public key a line)."""
    http: str
    """Read-only HTTP endpoint (/metrics, /api/status, dashboard /): "PORT" (on 127.0.0.1),
    "HOST:PORT" or "[IPv6]:PORT"; port 0 picks a free one; "" (default): off."""
    min_free_bytes: int
    """A result that would leave less than this free in the working folder waits on its
    client, which offers it again; default 256 MiB, 0: not checked."""
    def __init__(self, *, workdir: Optional[_PathLike] = None, bind: str = "tcp://*:8080",
                 heartbeat_interval: _Duration = ..., liveness: int = 5,
                 training_timeout: _Duration = ..., prediction_timeout: _Duration = ...,
                 reconcile_interval: _Duration = ..., lease_grace: _Duration = 0,
                 log_to_stdout: bool = True, security: ServerOptions.Security = ...,
                 key_file: Optional[_PathLike] = None,
                 authorized_keys: Optional[_PathLike] = None, http: str = "",
                 min_free_bytes: int = ...) -> None: ...

def default_server_workdir(explicit_dir: Optional[_PathLike] = None) -> Path:
    """explicit_dir, else $CONDUCTOR_WORKDIR, else ./workdir under RUNTIMEENV=docker, else
    ~/Conductor."""

class VersionStatus:
    @property
    def name(self) -> str: ...
    @property
    def is_local(self) -> bool: ...
    @property
    def target_models(self) -> int: ...
    @property
    def stored_models(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def active(self) -> int: ...

class ServerStatus:
    @property
    def clients(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def active(self) -> int: ...
    @property
    def versions(self) -> list[VersionStatus]: ...

class Explanation:
    """Where an item stands and why (Server.explain)."""
    @property
    def state(self) -> str:
        """"running", "leased", "queued" or "held"."""
    @property
    def text(self) -> str:
        """One line of plain words, e.g. "queued: version v2 requires gpu; none of the 3
        connected clients has a GPU (position 1 of 4 in the queue)"."""

class Server:
    """The coordinator, embedded in this process; serves on a thread of its own.

    Server(options) or Server(**ServerOptions fields). Context manager: enter starts, exit
    closes. Thread-safe. Raises ConfigError (broken config or version file), TransportError
    (endpoint cannot be bound), IoError (folder unusable or used by another server).
    """
    def __init__(self, options: Optional[ServerOptions] = None, *,
                 workdir: Optional[_PathLike] = ..., bind: str = ...,
                 heartbeat_interval: _Duration = ..., liveness: int = ...,
                 training_timeout: _Duration = ..., prediction_timeout: _Duration = ...,
                 reconcile_interval: _Duration = ..., lease_grace: _Duration = ...,
                 log_to_stdout: bool = ..., security: ServerOptions.Security = ...,
                 key_file: Optional[_PathLike] = ...,
                 authorized_keys: Optional[_PathLike] = ..., http: str = ...,
                 min_free_bytes: int = ...) -> None: ...
    def __enter__(self) -> Server: ...
    def __exit__(self, *exc_info: Any) -> bool: ...
    def start(self) -> None:
        """Serves on a background thread. run() or start(), once; raises Error otherwise."""
    def run(self) -> None:
        """Serves until stop() (from another thread) or Ctrl-C, then stops."""
    def stop(self) -> None:
        """Asks the loop to end and returns at once. Idempotent."""
    def close(self) -> None:
        """Stops and joins, releasing the port and the working folder. Later calls raise
        Error; close() may be called again."""
    @property
    def closed(self) -> bool: ...
    def endpoint(self) -> str:
        """The bound endpoint, port resolved: "tcp://127.0.0.1:41234"."""
    def http_endpoint(self) -> str:
        """The HTTP endpoint, port resolved: "http://127.0.0.1:41235"; "" without `http`."""
    def public_key(self) -> str:
        """The CURVE public key (Z85) clients need as server_key; "" without CURVE."""
    def workdir(self) -> Path: ...
    def status(self) -> ServerStatus:
        """A snapshot at most one loop turn old."""
    def set_reserve(self, fraction: float) -> None:
        """Share of clients (0..1) kept free for prediction work; saved to config.xml."""
    def set_target(self, version: str, target_models: int) -> None: ...
    def set_requirement(self, version: str, requirement: Requirement) -> None:
        """Which clients may run the version's items; saved to its version.xml/config.xml."""
    def explain(self, item_id: str) -> Explanation:
        """Why the queued or active item waits, or where it runs. `item_id` may be a unique
        prefix. Raises Error (ARGUMENT) when no item, or several, match."""
    def add_version(self, folder: _PathLike, name: str = "") -> None:
        """Copies `folder` (with its version.xml) to assets/<name> as a local version."""
    def remove_version(self, version: str) -> None:
        """Stops training `version`; its stored models stay."""
    def select_version(self, version: str) -> None:
        """Makes `version` the current one, which predictions use by default."""
    def start_prediction(self, rows: _Rows, version: Optional[str] = None, *, top: int = 0,
                         by: str = "", order: PredictOptions.Order = ...) -> str:
        """Sends `rows` (see to_csv) as predictiondata.csv to every chosen model; returns the
        request id. Raises Error (ARGUMENT) for an unknown version, one without prediction
        commands or models, or a full queue (PREDICTION_QUEUE_LIMIT items)."""
    def predict(self, rows: _Rows, version: Optional[str] = None, *, top: int = 0,
                by: str = "", order: PredictOptions.Order = ...,
                timeout: Optional[float] = None) -> EnsembleResult:
        """start_prediction(), then waits (Ctrl-C works) for every model to answer or fail.
        Raises TimeoutError after `timeout` seconds."""
    def wait_prediction(self, request_id: str, timeout: Optional[float] = None) -> EnsembleResult: ...
    def prediction(self, request_id: str) -> Optional[EnsembleResult]:
        """The result once complete; None while it runs. Raises Error for an unknown id."""
    def wait_for_prediction(self, request_id: str,
                            timeout: _Duration) -> Optional[EnsembleResult]:
        """prediction(), waiting up to `timeout` for completion; returns as soon as it
        completes, None when the time runs out first."""
    def control(self, command: str, args: Mapping[str, str] = ...) -> str:
        """An operator command by name (docs/protocol.md); returns the JSON reply body."""
    def next_stored_model(self, timeout: _Duration) -> Optional[StoredModel]:
        """The next model accepted since construction, waiting up to `timeout`."""
    def stored_models(self, count: Optional[int] = None,
                      timeout: Optional[float] = None) -> Iterator[StoredModel]:
        """Yields accepted models as they arrive: `count` of them, or for ever. Raises
        TimeoutError when `timeout` seconds pass without one."""

# --- client -----------------------------------------------------------------------------------

class ClientOptions:
    class Display(enum.Enum):
        """PLAIN: the log and the commands' output line by line. AUTO: the same lines plus a
        progress bar per item, redrawn in place, when stdout is a terminal."""
        PLAIN = 0
        AUTO = 1
    server: str
    """"host:port" or "tcp://host:port"."""
    workdir: Optional[Path]
    host_name: str
    os: str
    processing_unit: str
    """"cpu" or "gpu" (CONDUCTOR_TYPE)."""
    slots: int
    """Items run at once; 0: 1 on a CPU client, one per GPU on a GPU client."""
    gpus: list[str]
    """A GPU client's GPUs (CUDA_VISIBLE_DEVICES names), one slot each; []: detect_gpus()."""
    container_version: str
    heartbeat_interval: datetime.timedelta
    liveness: int
    log_to_stdout: bool
    display: ClientOptions.Display
    """PLAIN by default: a program that embeds clients owns its terminal."""
    server_key: str
    """The server's CURVE public key; "" for plain TCP."""
    key_file: Optional[Path]
    """None: <workdir>/client.key, made when missing; list its key in authorized_keys."""
    def __init__(self) -> None: ...

def client_options_from_environment() -> ClientOptions:
    """CONDUCTOR_HOST, CONDUCTOR_OS, CONDUCTOR_TYPE, CONDUCTOR_VERSION, the server's key from
    CONDUCTOR_SERVER_KEY else the file CONDUCTOR_SERVER_KEY_FILE, the key pair file
    CONDUCTOR_KEY_PAIR_FILE (which must exist), the host name, and $CONDUCTOR_CLIENT_WORKDIR
    (else ~/ConductorClient) as working folder. Raises IoError or ConfigError naming the
    variable and file when a named key file is missing or unusable."""

def detect_gpus() -> list[str]:
    """$CUDA_VISIBLE_DEVICES split at commas, else the GPUs `nvidia-smi -L` lists (a MIG
    instance's UUID for each instance of a split GPU), else []."""
def split_gpu_list(text: str) -> list[str]:
    """"0,1, 3" -> ["0", "1", "3"]."""

def public_key_of(key_file: _PathLike) -> str:
    """The public key in `key_file`, making a fresh pair there when it is missing."""
def default_server_key_file(server_workdir: _PathLike) -> Path: ...
def default_authorized_keys(server_workdir: _PathLike) -> Path: ...
def default_client_key_file(client_workdir: _PathLike) -> Path: ...
def default_operator_key_file() -> Path: ...

class Client:
    """A worker, embedded in this process; runs one item per slot (ClientOptions.slots).

    Client(options) or Client(**ClientOptions fields) over client_options_from_environment().
    Context manager: enter starts, exit closes. Raises Error (ARGUMENT) for a malformed server
    address, IoError for an unusable working folder or one another client uses.
    """
    def __init__(self, options: Optional[ClientOptions] = None, *, server: str = ...,
                 workdir: Optional[_PathLike] = ..., host_name: str = ..., os: str = ...,
                 processing_unit: str = ..., slots: int = ..., gpus: Sequence[str] = ...,
                 container_version: str = ...,
                 heartbeat_interval: _Duration = ..., liveness: int = ...,
                 log_to_stdout: bool = ..., display: ClientOptions.Display = ...,
                 server_key: str = ..., key_file: Optional[_PathLike] = ...) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(self, *exc_info: Any) -> bool: ...
    def start(self) -> None: ...
    def run(self) -> None:
        """Works until stop() (from another thread) or Ctrl-C, then stops."""
    def stop(self) -> None:
        """Stops the running item's processes and leaves; returns at once."""
    def close(self) -> None:
        """Stops and joins, releasing the working folder."""
    @property
    def closed(self) -> bool: ...
    def completed_items(self) -> int:
        """Items whose result the server acknowledged as stored."""
    def slots(self) -> int:
        """How many items it runs at once."""
    def gpus(self) -> list[str]:
        """A GPU client's GPU per slot; [] otherwise."""
    def public_key(self) -> str:
        """This client's CURVE public key: what the server's authorized_keys must list."""

# --- controller -------------------------------------------------------------------------------

class Controller:
    """An operator's connection to a server in another process. One per thread."""
    def __init__(self, server: str, timeout: _Duration = ..., server_key: str = "",
                 key_file: Optional[_PathLike] = None) -> None: ...
    def call(self, command: str, args: Mapping[str, str] = ...) -> str:
        """Returns the reply body (JSON). Raises Error with the server's refusal,
        TransportError when no reply came in time."""
    def add_version(self, folder: _PathLike, name: str = "") -> str: ...
    def predict(self, csv_rows: str, args: Mapping[str, str], wait: _Duration) -> str: ...

def to_csv(rows: _Rows) -> str:
    """`rows` as predictiondata.csv text: a str as is, else one comma-joined line per row."""
