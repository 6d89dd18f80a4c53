// conductor._conductor: libconductor's public API, one to one, for Python. The package
// conductor/__init__.py re-exports it and adds the Pythonic parts (context managers, waiting
// with Ctrl-C, iterators); docs and types for both are in conductor/__init__.pyi.
#include "bindings.hpp"

PYBIND11_MODULE(_conductor, module) {
  module.doc() =
      "libconductor bound one to one; import the public API from `conductor`, not from here.";
  conductor::python::bind_errors(module);
  conductor::python::bind_values(module);
  conductor::python::bind_active(module);
}
