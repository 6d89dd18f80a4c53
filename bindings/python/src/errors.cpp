// conductor::Error and its subclasses become Python exceptions of the same names, each
// carrying the C++ error code as `code`. Error derives from RuntimeError, as the C++ class
// derives from std::runtime_error.
#include <array>

#include "bindings.hpp"
#include "conductor/error.hpp"

namespace py = pybind11;

namespace conductor::python {
namespace {

struct ErrorClass {
  ErrorCode code;
  const char* name;
  const char* doc;
};

constexpr std::array<ErrorClass, 7> kErrorClasses{{
    {ErrorCode::kConfig, "ConfigError",
     "A configuration or version XML file is missing, malformed or invalid (file:line in the "
     "message)."},
    {ErrorCode::kProtocol, "ProtocolError", "A message does not follow the wire protocol."},
    {ErrorCode::kPackage, "PackageError",
     "An archive could not be packed or was refused on extraction."},
    {ErrorCode::kProcess, "ProcessError", "A command could not be parsed or started."},
    {ErrorCode::kIo, "IoError", "The file system refused an operation."},
    {ErrorCode::kTransport, "TransportError",
     "A socket could not be bound or connected, or a reply did not come in time."},
    {ErrorCode::kArgument, "Error", ""},  // no subclass in C++: raised as Error itself
}};

// Owned references, deliberately never released: they must outlive every translation, and a
// static py::object would be decremented after the interpreter is gone.
PyObject* g_base = nullptr;
std::array<PyObject*, kErrorClasses.size()> g_classes{};

PyObject* class_for(ErrorCode code) {
  for (std::size_t i = 0; i < kErrorClasses.size(); ++i) {
    if (kErrorClasses[i].code == code) return g_classes[i];
  }
  return g_base;
}

void raise(const Error& error) {
  PyObject* type = class_for(error.code());
  py::object instance =
      py::reinterpret_steal<py::object>(PyObject_CallFunction(type, "s", error.what()));
  if (!instance) return;  // the constructor raised; that error stands
  instance.attr("code") = py::cast(error.code());
  PyErr_SetObject(type, instance.ptr());
}

}  // namespace

void bind_errors(py::module_& module) {
  py::enum_<ErrorCode>(module, "ErrorCode", "What kind of failure a conductor.Error reports.")
      .value("CONFIG", ErrorCode::kConfig)
      .value("PROTOCOL", ErrorCode::kProtocol)
      .value("PACKAGE", ErrorCode::kPackage)
      .value("PROCESS", ErrorCode::kProcess)
      .value("IO", ErrorCode::kIo)
      .value("TRANSPORT", ErrorCode::kTransport)
      .value("ARGUMENT", ErrorCode::kArgument);

  g_base = PyErr_NewExceptionWithDoc(
      "conductor.Error",
      "Every failure of the library. `code` (an ErrorCode) says which kind; the message names "
      "what was refused and why. ErrorCode.ARGUMENT (an invalid value, unknown version or "
      "request id) has no subclass.",
      PyExc_RuntimeError, nullptr);
  if (!g_base) throw py::error_already_set();
  module.add_object("Error", py::handle(g_base).inc_ref());
  for (std::size_t i = 0; i < kErrorClasses.size(); ++i) {
    const ErrorClass& error = kErrorClasses[i];
    if (error.code == ErrorCode::kArgument) {
      g_classes[i] = g_base;
      continue;
    }
    std::string qualified = std::string("conductor.") + error.name;
    g_classes[i] = PyErr_NewExceptionWithDoc(qualified.c_str(), error.doc, g_base, nullptr);
    if (!g_classes[i]) throw py::error_already_set();
    py::handle(g_classes[i]).attr("code") = py::cast(error.code);
    module.add_object(error.name, py::handle(g_classes[i]).inc_ref());
  }
  py::handle(g_base).attr("code") = py::none();

  py::register_exception_translator([](std::exception_ptr thrown) {
    try {
      if (thrown) std::rethrow_exception(thrown);
    } catch (const Error& error) {
      raise(error);
    }
  });
}

}  // namespace conductor::python
