// The active objects: Server, Client and Controller. Every call that can wait (network, disk,
// joining threads) releases the GIL, so other Python threads run meanwhile. Two additions to
// the C++ API keep Python safe: start()/run() a second time raises instead of terminating the
// process, and close() stops and joins now, as the C++ destructor does, rather than whenever
// the garbage collector gets to it. Ctrl-C is the Python package's part: it waits in slices.
#include <pybind11/chrono.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <memory>
#include <type_traits>

#include "bindings.hpp"
#include "conductor/client.hpp"
#include "conductor/controller.hpp"
#include "conductor/error.hpp"
#include "conductor/server.hpp"

namespace py = pybind11;
namespace fs = std::filesystem;

namespace conductor::python {
namespace {

// Runs `call` on `object` without the GIL. The shared_ptr is let go of inside too: when
// close() ran meanwhile in another thread, this is the last owner and its destructor joins
// threads, which must not hold up every other Python thread.
template <typename T, typename Call>
auto without_gil(std::shared_ptr<T> object, Call call) {
  py::gil_scoped_release release;
  try {
    if constexpr (std::is_void_v<decltype(call(*object))>) {
      call(*object);
      object.reset();
    } else {
      auto result = call(*object);
      object.reset();
      return result;
    }
  } catch (...) {
    object.reset();
    throw;
  }
}

// Owns one active object for Python: refuses calls after close() and a second start.
template <typename T>
class Owner {
 public:
  Owner(std::shared_ptr<T> object, const char* what) : object_(std::move(object)), what_(what) {}
  ~Owner() { close(); }
  Owner(const Owner&) = delete;
  Owner& operator=(const Owner&) = delete;

  // Called with the GIL held, like every method here, so no two threads race on object_.
  std::shared_ptr<T> get() const {
    if (!object_) throw Error(ErrorCode::kArgument, std::string(what_) + " is closed");
    return object_;
  }

  std::shared_ptr<T> claim_start(const char* method) {
    auto object = get();
    if (started_) {
      throw Error(ErrorCode::kArgument,
                  std::string(what_) + "." + method +
                      "() refused: run() or start() was already called; each " + what_ +
                      " runs once");
    }
    started_ = true;
    return object;
  }

  void close() {
    std::shared_ptr<T> object = std::move(object_);
    if (!object) return;
    object->stop();
    if (PyGILState_Check()) {
      py::gil_scoped_release release;
      object.reset();
    }
  }

  bool is_closed() const { return !object_; }

 private:
  std::shared_ptr<T> object_;
  const char* what_;
  bool started_ = false;
};

using PyServer = Owner<Server>;
using PyClient = Owner<Client>;

void bind_server(py::module_& m) {
  py::class_<PyServer>(
      m, "Server",
      "The coordinator: holds versions, hands work items to clients, stores their models. "
      "Thread-safe; close() (or the context manager) stops and joins it.")
      .def(py::init([](ServerOptions options) {
             py::gil_scoped_release release;
             return std::make_unique<PyServer>(std::make_shared<Server>(std::move(options)),
                                               "Server");
           }),
           py::arg("options"))
      .def("run",
           [](PyServer& self) { without_gil(self.claim_start("run"), [](Server& s) { s.run(); }); })
      .def("start",
           [](PyServer& self) {
             without_gil(self.claim_start("start"), [](Server& s) { s.start(); });
           })
      .def("stop",
           [](PyServer& self) {
             if (!self.is_closed()) self.get()->stop();
           })
      .def("close", &PyServer::close)
      .def_property_readonly("closed", &PyServer::is_closed)
      .def("endpoint", [](PyServer& self) { return self.get()->endpoint(); })
      .def("http_endpoint", [](PyServer& self) { return self.get()->http_endpoint(); })
      .def("public_key", [](PyServer& self) { return self.get()->public_key(); })
      .def("workdir", [](PyServer& self) { return self.get()->workdir(); })
      .def("status",
           [](PyServer& self) {
             return without_gil(self.get(), [](Server& s) { return s.status(); });
           })
      .def(
          "set_reserve",
          [](PyServer& self, double fraction) {
            without_gil(self.get(), [&](Server& s) { s.set_reserve(fraction); });
          },
          py::arg("fraction"))
      .def(
          "set_target",
          [](PyServer& self, const std::string& version, int target) {
            without_gil(self.get(), [&](Server& s) { s.set_target(version, target); });
          },
          py::arg("version"), py::arg("target_models"))
      .def(
          "set_requirement",
          [](PyServer& self, const std::string& version, Requirement requirement) {
            without_gil(self.get(), [&](Server& s) { s.set_requirement(version, requirement); });
          },
          py::arg("version"), py::arg("requirement"))
      .def(
          "explain",
          [](PyServer& self, const std::string& item_id) {
            return without_gil(self.get(), [&](Server& s) { return s.explain(item_id); });
          },
          py::arg("item_id"))
      .def(
          "add_version",
          [](PyServer& self, const fs::path& folder, const std::string& name) {
            without_gil(self.get(), [&](Server& s) { s.add_version(folder, name); });
          },
          py::arg("folder"), py::arg("name") = "")
      .def(
          "remove_version",
          [](PyServer& self, const std::string& version) {
            without_gil(self.get(), [&](Server& s) { s.remove_version(version); });
          },
          py::arg("version"))
      .def(
          "select_version",
          [](PyServer& self, const std::string& version) {
            without_gil(self.get(), [&](Server& s) { s.select_version(version); });
          },
          py::arg("version"))
      .def(
          "predict",
          [](PyServer& self, const std::string& csv_rows, const PredictOptions& options) {
            return without_gil(self.get(), [&](Server& s) { return s.predict(csv_rows, options); });
          },
          py::arg("csv_rows"), py::arg("options") = PredictOptions{})
      .def(
          "prediction",
          [](PyServer& self, const std::string& request_id) {
            return without_gil(self.get(), [&](Server& s) { return s.prediction(request_id); });
          },
          py::arg("request_id"))
      .def(
          "wait_for_prediction",
          [](PyServer& self, const std::string& request_id, std::chrono::milliseconds timeout) {
            return without_gil(
                self.get(), [&](Server& s) { return s.wait_for_prediction(request_id, timeout); });
          },
          py::arg("request_id"), py::arg("timeout"))
      .def(
          "control",
          [](PyServer& self, const std::string& command,
             const std::map<std::string, std::string>& args) {
            return without_gil(self.get(), [&](Server& s) { return s.control(command, args); });
          },
          py::arg("command"), py::arg("args") = std::map<std::string, std::string>{})
      .def(
          "next_stored_model",
          [](PyServer& self, std::chrono::milliseconds timeout) {
            return without_gil(self.get(), [&](Server& s) { return s.next_stored_model(timeout); });
          },
          py::arg("timeout"));
}

void bind_client(py::module_& m) {
  py::class_<PyClient>(
      m, "Client",
      "A worker: takes work items from a server, one per slot, and runs their commands. "
      "Thread-safe; close() (or the context manager) stops and joins it.")
      .def(py::init([](ClientOptions options) {
             py::gil_scoped_release release;
             return std::make_unique<PyClient>(std::make_shared<Client>(std::move(options)),
                                               "Client");
           }),
           py::arg("options"))
      .def("run",
           [](PyClient& self) { without_gil(self.claim_start("run"), [](Client& c) { c.run(); }); })
      .def("start",
           [](PyClient& self) {
             without_gil(self.claim_start("start"), [](Client& c) { c.start(); });
           })
      .def("stop",
           [](PyClient& self) {
             if (!self.is_closed()) self.get()->stop();
           })
      .def("close", &PyClient::close)
      .def_property_readonly("closed", &PyClient::is_closed)
      .def("completed_items", [](PyClient& self) { return self.get()->completed_items(); })
      .def("slots", [](PyClient& self) { return self.get()->slots(); })
      .def("gpus", [](PyClient& self) { return self.get()->gpus(); })
      .def("public_key", [](PyClient& self) { return self.get()->public_key(); });
}

void bind_controller(py::module_& m) {
  using Args = std::map<std::string, std::string>;
  py::class_<Controller>(m, "Controller",
                         "An operator's connection to a server in another process. "
                         "Not thread-safe: one Controller per thread.")
      .def(py::init([](const std::string& server, std::chrono::milliseconds timeout,
                       const std::string& server_key, std::optional<fs::path> key_file) {
             py::gil_scoped_release release;
             return std::make_unique<Controller>(server, timeout, server_key,
                                                 key_file.value_or(fs::path{}));
           }),
           py::arg("server"),
           py::arg("timeout") = std::chrono::milliseconds(std::chrono::seconds(10)),
           py::arg("server_key") = "", py::arg("key_file") = py::none())
      .def("call", &Controller::call, py::arg("command"), py::arg("args") = Args{},
           py::call_guard<py::gil_scoped_release>())
      .def("add_version", &Controller::add_version, py::arg("folder"), py::arg("name") = "",
           py::call_guard<py::gil_scoped_release>())
      .def("predict", &Controller::predict, py::arg("csv_rows"), py::arg("args"), py::arg("wait"),
           py::call_guard<py::gil_scoped_release>());
}

}  // namespace

void bind_active(py::module_& module) {
  bind_server(module);
  bind_client(module);
  bind_controller(module);
}

}  // namespace conductor::python
