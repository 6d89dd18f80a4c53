// The plain value types and free functions: versions and configuration files, options,
// statuses, model records and ensemble results. Fields keep their C++ names; containers are
// converted (copied) to Python lists, dicts and pathlib.Path on every access, so mutate a
// list field by assigning a new list.
#include <pybind11/chrono.h>
#include <pybind11/operators.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <sstream>

#include "bindings.hpp"
#include "conductor/asset_store.hpp"
#include "conductor/client.hpp"
#include "conductor/config.hpp"
#include "conductor/ensemble.hpp"
#include "conductor/evaluation.hpp"
#include "conductor/keys.hpp"
#include "conductor/server.hpp"
#include "conductor/version.hpp"

namespace py = pybind11;
namespace fs = std::filesystem;

namespace conductor::python {
namespace {

std::string quoted(const std::string& text) { return py::repr(py::str(text)).cast<std::string>(); }

// An empty path means "not given" in the C++ options; Python says None, since pathlib turns
// an empty path into '.', which would silently mean the current folder.
template <typename Options>
auto optional_path_getter(fs::path Options::*field) {
  return [field](const Options& options) -> std::optional<fs::path> {
    if ((options.*field).empty()) return std::nullopt;
    return options.*field;
  };
}

template <typename Options>
auto optional_path_setter(fs::path Options::*field) {
  return [field](Options& options, std::optional<fs::path> path) {
    options.*field = path.value_or(fs::path{});
  };
}

void bind_version(py::module_& m) {
  py::enum_<DatasetType>(m, "DatasetType", "How the evaluation reads a model's *results.csv.")
      .value("GENERIC", DatasetType::kGeneric)
      .value("CARGO2000", DatasetType::kCargo2000);
  py::enum_<Requirement>(m, "Requirement", "Which clients may run a version's items (<Requires>).")
      .value("ANY", Requirement::kAny)
      .value("CPU", Requirement::kCpu)
      .value("GPU", Requirement::kGpu);

  py::class_<Command>(m, "Command",
                      "One executable and its arguments (split like a shell, never run by one).")
      .def(py::init<std::string, std::string, std::string>(), py::arg("file_name") = "",
           py::arg("arguments") = "", py::arg("parameters") = "")
      .def_readwrite("file_name", &Command::file_name)
      .def_readwrite("arguments", &Command::arguments)
      .def_readwrite("parameters", &Command::parameters)
      .def(py::self == py::self)
      .def("__repr__", [](const Command& c) {
        return "Command(file_name=" + quoted(c.file_name) + ", arguments=" + quoted(c.arguments) +
               ")";
      });

  Version defaults;
  py::class_<Version>(m, "Version",
                      "A named training setup: the commands that train one model, and a target.")
      .def(
          py::init([](std::string name, DatasetType dataset_type, std::vector<Command> training,
                      std::vector<Command> prediction, int target_models, std::string model_pattern,
                      std::string prediction_pattern, std::string prediction_output,
                      std::string created, std::string last_updated, std::string status,
                      Requirement requirement) {
            Version v;
            v.name = std::move(name);
            v.dataset_type = dataset_type;
            v.training_commands = std::move(training);
            v.prediction_commands = std::move(prediction);
            v.target_models = target_models;
            v.model_pattern = std::move(model_pattern);
            v.prediction_pattern = std::move(prediction_pattern);
            v.prediction_output = std::move(prediction_output);
            v.created = std::move(created);
            v.last_updated = std::move(last_updated);
            v.status = std::move(status);
            v.requirement = requirement;
            return v;
          }),
          py::kw_only(), py::arg("name") = "", py::arg("dataset_type") = defaults.dataset_type,
          py::arg("training_commands") = std::vector<Command>{},
          py::arg("prediction_commands") = std::vector<Command>{}, py::arg("target_models") = 0,
          py::arg("model_pattern") = defaults.model_pattern,
          py::arg("prediction_pattern") = defaults.prediction_pattern,
          py::arg("prediction_output") = "", py::arg("created") = "", py::arg("last_updated") = "",
          py::arg("status") = "", py::arg("requirement") = defaults.requirement)
      .def_readwrite("name", &Version::name)
      .def_readwrite("created", &Version::created)
      .def_readwrite("last_updated", &Version::last_updated)
      .def_readwrite("dataset_type", &Version::dataset_type)
      .def_readwrite("status", &Version::status)
      .def_readwrite("training_commands", &Version::training_commands)
      .def_readwrite("prediction_commands", &Version::prediction_commands)
      .def_readwrite("target_models", &Version::target_models)
      .def_readwrite("model_pattern", &Version::model_pattern)
      .def_readwrite("prediction_pattern", &Version::prediction_pattern)
      .def_readwrite("prediction_output", &Version::prediction_output)
      .def_readwrite("requirement", &Version::requirement)
      .def(py::self == py::self)
      .def("__repr__", [](const Version& v) {
        return "Version(name=" + quoted(v.name) +
               ", target_models=" + std::to_string(v.target_models) +
               ", training_commands=" + std::to_string(v.training_commands.size()) +
               ", prediction_commands=" + std::to_string(v.prediction_commands.size()) + ")";
      });

  m.attr("DEFAULT_MODEL_PATTERN") = kDefaultModelPattern;
  m.attr("DEFAULT_PREDICTION_PATTERN") = kDefaultPredictionPattern;
}

void bind_configuration(py::module_& m) {
  py::class_<Configuration>(m, "Configuration", "The contents of config/config.xml.")
      .def(py::init<>())
      .def_readwrite("created", &Configuration::created)
      .def_readwrite("last_updated", &Configuration::last_updated)
      .def_readwrite("versions", &Configuration::versions)
      .def_readwrite("current_version", &Configuration::current_version)
      .def_readwrite("reserve_nodes", &Configuration::reserve_nodes)
      .def(py::self == py::self)
      .def("__repr__", [](const Configuration& c) {
        std::ostringstream out;
        out << "Configuration(versions=" << c.versions.size()
            << ", reserve_nodes=" << c.reserve_nodes << ", current_version="
            << (c.current_version ? quoted(c.current_version->name) : "None") << ")";
        return out.str();
      });
  m.def("default_configuration", &default_configuration);
  m.def("load_configuration", &load_configuration, py::arg("file"));
  m.def("save_configuration", &save_configuration, py::arg("config"), py::arg("file"));
  m.def("load_version_file", &load_version_file, py::arg("file"));
  m.def("save_version_file", &save_version_file, py::arg("version"), py::arg("file"));
}

void bind_models(py::module_& m) {
  py::class_<ModelMeta>(m, "ModelMeta",
                        "What the server recorded about one trained model (meta.xml).")
      .def(py::init<>())
      .def_readwrite("item_id", &ModelMeta::item_id)
      .def_readwrite("duration_seconds", &ModelMeta::duration_seconds)
      .def_readwrite("epochs", &ModelMeta::epochs)
      .def_readwrite("last_epoch_seconds", &ModelMeta::last_epoch_seconds)
      .def_readwrite("node_name", &ModelMeta::node_name)
      .def_readwrite("os", &ModelMeta::os)
      .def_readwrite("processing_unit", &ModelMeta::processing_unit)
      .def_readwrite("container_version", &ModelMeta::container_version)
      .def_readwrite("timestamp", &ModelMeta::timestamp)
      .def_readwrite("attempt", &ModelMeta::attempt)
      .def_readwrite("metrics", &ModelMeta::metrics)
      .def(py::self == py::self)
      .def("__repr__", [](const ModelMeta& meta) {
        std::ostringstream out;
        out << "ModelMeta(item_id=" << quoted(meta.item_id)
            << ", node_name=" << quoted(meta.node_name)
            << ", duration_seconds=" << meta.duration_seconds << ", metrics={";
        for (std::size_t i = 0; i < meta.metrics.size(); ++i) {
          out << (i ? ", " : "") << quoted(meta.metrics[i].first) << ": " << meta.metrics[i].second;
        }
        out << "})";
        return out.str();
      });

  py::class_<StoredModel>(m, "StoredModel",
                          "A model the server accepted, as Server.next_stored_model reports it.")
      .def_readonly("version", &StoredModel::version)
      .def_readonly("id", &StoredModel::id)
      .def_readonly("folder", &StoredModel::folder)
      .def_readonly("meta", &StoredModel::meta)
      .def_readonly("meta_error", &StoredModel::meta_error,
                    "Why meta could not be read (the file, and the line for bad XML); empty when "
                    "it was")
      .def("__repr__", [](const StoredModel& model) {
        return "StoredModel(version=" + quoted(model.version) + ", id=" + quoted(model.id) + ")";
      });

  py::class_<Evaluation>(m, "Evaluation",
                         "The metrics of a model folder, and the files that could not be used.")
      .def_readonly("metrics", &Evaluation::metrics)
      .def_readonly("problems", &Evaluation::problems);
  m.def("read_training_metrics", &read_training_metrics, py::arg("model_folder"));
  m.def("evaluate_results_csv", &evaluate_results_csv, py::arg("csv"), py::arg("type"));
  m.def("evaluate_model_folder",
        py::overload_cast<const std::filesystem::path&, DatasetType>(&evaluate_model_folder),
        py::arg("folder"), py::arg("type"));
}

void bind_ensemble(py::module_& m) {
  py::class_<PredictionValue>(m, "PredictionValue", "One model's answer to a prediction request.")
      .def_readonly("model_id", &PredictionValue::model_id)
      .def_readonly("value", &PredictionValue::value)
      .def("__repr__", [](const PredictionValue& v) {
        return "PredictionValue(model_id=" + quoted(v.model_id) +
               ", value=" + py::repr(py::float_(v.value)).cast<std::string>() + ")";
      });
  py::class_<PredictionFailure>(m, "PredictionFailure", "A model that gave no answer, and why.")
      .def_readonly("model_id", &PredictionFailure::model_id)
      .def_readonly("reason", &PredictionFailure::reason)
      .def("__repr__", [](const PredictionFailure& f) {
        return "PredictionFailure(model_id=" + quoted(f.model_id) + ", reason=" + quoted(f.reason) +
               ")";
      });
  py::class_<EnsembleResult>(
      m, "EnsembleResult",
      "The answers of every model to one prediction request, and their statistics.")
      .def_readonly("request_id", &EnsembleResult::request_id)
      .def_readonly("version", &EnsembleResult::version)
      .def_readonly("complete", &EnsembleResult::complete)
      .def_readonly("expected", &EnsembleResult::expected)
      .def_readonly("values", &EnsembleResult::values)
      .def_readonly("failures", &EnsembleResult::failures)
      .def_readonly("mean", &EnsembleResult::mean)
      .def_readonly("median", &EnsembleResult::median)
      .def_readonly("stddev", &EnsembleResult::stddev)
      .def_readonly("min", &EnsembleResult::min)
      .def_readonly("max", &EnsembleResult::max)
      .def("__repr__", [](const EnsembleResult& r) {
        std::ostringstream out;
        out << "EnsembleResult(request_id=" << quoted(r.request_id)
            << ", version=" << quoted(r.version) << ", complete=" << (r.complete ? "True" : "False")
            << ", values=" << r.values.size() << ", failures=" << r.failures.size()
            << ", mean=" << r.mean << ", median=" << r.median << ")";
        return out.str();
      });
  m.def("parse_prediction", &parse_prediction, py::arg("output"), py::arg("pattern"));
}

void bind_server_values(py::module_& m) {
  ServerOptions defaults;
  py::class_<ServerOptions> server_options(
      m, "ServerOptions", "How a Server serves; keyword arguments set the fields.");
  py::enum_<ServerOptions::Security>(server_options, "Security",
                                     "CurveZMQ encryption and the client allow-list.")
      .value("AUTO", ServerOptions::Security::kAuto)
      .value("CURVE", ServerOptions::Security::kCurve)
      .value("INSECURE", ServerOptions::Security::kInsecure);
  server_options
      .def(py::init([](std::optional<fs::path> workdir, std::string bind,
                       std::chrono::milliseconds heartbeat_interval, int liveness,
                       std::chrono::milliseconds training_timeout,
                       std::chrono::milliseconds prediction_timeout,
                       std::chrono::milliseconds reconcile_interval,
                       std::chrono::milliseconds lease_grace, bool log_to_stdout,
                       ServerOptions::Security security, std::optional<fs::path> key_file,
                       std::optional<fs::path> authorized_keys, std::string http,
                       std::uint64_t min_free_bytes) {
             ServerOptions o;
             o.workdir = workdir.value_or(fs::path{});
             o.bind = std::move(bind);
             o.heartbeat_interval = heartbeat_interval;
             o.liveness = liveness;
             o.training_timeout = training_timeout;
             o.prediction_timeout = prediction_timeout;
             o.reconcile_interval = reconcile_interval;
             o.lease_grace = lease_grace;
             o.log_to_stdout = log_to_stdout;
             o.security = security;
             o.key_file = key_file.value_or(fs::path{});
             o.authorized_keys = authorized_keys.value_or(fs::path{});
             o.http = std::move(http);
             o.min_free_bytes = min_free_bytes;
             return o;
           }),
           py::kw_only(), py::arg("workdir") = py::none(), py::arg("bind") = defaults.bind,
           py::arg("heartbeat_interval") = defaults.heartbeat_interval,
           py::arg("liveness") = defaults.liveness,
           py::arg("training_timeout") = defaults.training_timeout,
           py::arg("prediction_timeout") = defaults.prediction_timeout,
           py::arg("reconcile_interval") = defaults.reconcile_interval,
           py::arg("lease_grace") = defaults.lease_grace,
           py::arg("log_to_stdout") = defaults.log_to_stdout,
           py::arg("security") = defaults.security, py::arg("key_file") = py::none(),
           py::arg("authorized_keys") = py::none(), py::arg("http") = defaults.http,
           py::arg("min_free_bytes") = defaults.min_free_bytes)
      .def_property("workdir", optional_path_getter(&ServerOptions::workdir),
                    optional_path_setter(&ServerOptions::workdir))
      .def_readwrite("bind", &ServerOptions::bind)
      .def_readwrite("heartbeat_interval", &ServerOptions::heartbeat_interval)
      .def_readwrite("liveness", &ServerOptions::liveness)
      .def_readwrite("training_timeout", &ServerOptions::training_timeout)
      .def_readwrite("prediction_timeout", &ServerOptions::prediction_timeout)
      .def_readwrite("reconcile_interval", &ServerOptions::reconcile_interval)
      .def_readwrite("lease_grace", &ServerOptions::lease_grace)
      .def_readwrite("log_to_stdout", &ServerOptions::log_to_stdout)
      .def_readwrite("security", &ServerOptions::security)
      .def_property("key_file", optional_path_getter(&ServerOptions::key_file),
                    optional_path_setter(&ServerOptions::key_file))
      .def_property("authorized_keys", optional_path_getter(&ServerOptions::authorized_keys),
                    optional_path_setter(&ServerOptions::authorized_keys))
      .def_readwrite("http", &ServerOptions::http)
      .def_readwrite("min_free_bytes", &ServerOptions::min_free_bytes)
      .def("__repr__", [](const ServerOptions& o) {
        return "ServerOptions(workdir=" +
               (o.workdir.empty() ? std::string("None") : quoted(o.workdir.string())) +
               ", bind=" + quoted(o.bind) + ")";
      });
  m.def(
      "default_server_workdir",
      [](std::optional<fs::path> explicit_dir) {
        return default_server_workdir(explicit_dir.value_or(fs::path{}));
      },
      py::arg("explicit_dir") = py::none());

  py::class_<VersionStatus>(m, "VersionStatus", "One version's progress in a ServerStatus.")
      .def_readonly("name", &VersionStatus::name)
      .def_readonly("is_local", &VersionStatus::is_local)
      .def_readonly("target_models", &VersionStatus::target_models)
      .def_readonly("stored_models", &VersionStatus::stored_models)
      .def_readonly("queued", &VersionStatus::queued)
      .def_readonly("active", &VersionStatus::active)
      .def("__repr__", [](const VersionStatus& v) {
        return "VersionStatus(name=" + quoted(v.name) +
               ", stored_models=" + std::to_string(v.stored_models) +
               ", target_models=" + std::to_string(v.target_models) +
               ", queued=" + std::to_string(v.queued) + ", active=" + std::to_string(v.active) +
               ")";
      });
  py::class_<ServerStatus>(m, "ServerStatus",
                           "A snapshot of the server, at most one loop turn old.")
      .def_readonly("clients", &ServerStatus::clients)
      .def_readonly("queued", &ServerStatus::queued)
      .def_readonly("active", &ServerStatus::active)
      .def_readonly("versions", &ServerStatus::versions)
      .def("__repr__", [](const ServerStatus& s) {
        return "ServerStatus(clients=" + std::to_string(s.clients) +
               ", queued=" + std::to_string(s.queued) + ", active=" + std::to_string(s.active) +
               ", versions=" + std::to_string(s.versions.size()) + ")";
      });

  py::class_<PredictOptions> predict_options(m, "PredictOptions",
                                             "Which models answer a prediction request.");
  py::enum_<PredictOptions::Order>(predict_options, "Order",
                                   "Which end of the `by` metric ranks first.")
      .value("AUTO", PredictOptions::Order::kAuto)
      .value("HIGHER_IS_BETTER", PredictOptions::Order::kHigherIsBetter)
      .value("LOWER_IS_BETTER", PredictOptions::Order::kLowerIsBetter);
  predict_options
      .def(py::init([](std::string version, std::size_t top, std::string by,
                       PredictOptions::Order order) {
             PredictOptions o;
             o.version = std::move(version);
             o.top = top;
             o.by = std::move(by);
             o.order = order;
             return o;
           }),
           py::kw_only(), py::arg("version") = "", py::arg("top") = 0, py::arg("by") = "",
           py::arg("order") = PredictOptions::Order::kAuto)
      .def_readwrite("version", &PredictOptions::version)
      .def_readwrite("top", &PredictOptions::top)
      .def_readwrite("by", &PredictOptions::by)
      .def_readwrite("order", &PredictOptions::order);
  m.attr("PREDICTION_QUEUE_LIMIT") = kPredictionQueueLimit;

  py::class_<Explanation>(m, "Explanation", "Where an item stands and why, in plain words.")
      .def_readonly("state", &Explanation::state)
      .def_readonly("text", &Explanation::text)
      .def("__repr__", [](const Explanation& e) {
        return "Explanation(state=" + quoted(e.state) + ", text=" + quoted(e.text) + ")";
      });
}

void bind_client_values(py::module_& m) {
  py::class_<ClientOptions> client_options(
      m, "ClientOptions",
      "How a Client works; client_options_from_environment() gives the defaults.");
  py::enum_<ClientOptions::Display>(client_options, "Display",
                                    "How the log and the commands' output are printed.")
      .value("PLAIN", ClientOptions::Display::kPlain)
      .value("AUTO", ClientOptions::Display::kAuto);
  client_options.def(py::init<>())
      .def_readwrite("server", &ClientOptions::server)
      .def_property("workdir", optional_path_getter(&ClientOptions::workdir),
                    optional_path_setter(&ClientOptions::workdir))
      .def_readwrite("host_name", &ClientOptions::host_name)
      .def_readwrite("os", &ClientOptions::os)
      .def_readwrite("processing_unit", &ClientOptions::processing_unit)
      .def_readwrite("slots", &ClientOptions::slots)
      .def_readwrite("gpus", &ClientOptions::gpus)
      .def_readwrite("container_version", &ClientOptions::container_version)
      .def_readwrite("heartbeat_interval", &ClientOptions::heartbeat_interval)
      .def_readwrite("liveness", &ClientOptions::liveness)
      .def_readwrite("log_to_stdout", &ClientOptions::log_to_stdout)
      .def_readwrite("display", &ClientOptions::display)
      .def_readwrite("server_key", &ClientOptions::server_key)
      .def_property("key_file", optional_path_getter(&ClientOptions::key_file),
                    optional_path_setter(&ClientOptions::key_file))
      .def("__repr__", [](const ClientOptions& o) {
        return "ClientOptions(server=" + quoted(o.server) + ", workdir=" +
               (o.workdir.empty() ? std::string("None") : quoted(o.workdir.string())) +
               ", host_name=" + quoted(o.host_name) + ")";
      });
  // The apps' key variables too (CONDUCTOR_SERVER_KEY_FILE, CONDUCTOR_KEY_PAIR_FILE), read
  // here rather than in the C++ function: a Python call may raise, the apps read them after
  // their flags.
  m.def("client_options_from_environment", [] {
    ClientOptions options = client_options_from_environment();
    options.server_key = resolve_server_key({});
    options.key_file = resolve_key_pair({});
    return options;
  });
  m.def("detect_gpus", &detect_gpus);
  m.def("split_gpu_list", &split_gpu_list, py::arg("text"));

  m.def("public_key_of", &public_key_of, py::arg("key_file"));
  m.def("default_server_key_file", &default_server_key_file, py::arg("server_workdir"));
  m.def("default_authorized_keys", &default_authorized_keys, py::arg("server_workdir"));
  m.def("default_client_key_file", &default_client_key_file, py::arg("client_workdir"));
  m.def("default_operator_key_file", &default_operator_key_file);
}

}  // namespace

void bind_values(py::module_& module) {
  bind_version(module);
  bind_configuration(module);
  bind_models(module);
  bind_ensemble(module);
  bind_server_values(module);
  bind_client_values(module);
}

}  // namespace conductor::python
