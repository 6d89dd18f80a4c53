// The parts of the _conductor module, one function per file; module.cpp calls them in order
// (errors first, so every later binding can raise them).
#pragma once

#include <pybind11/pybind11.h>

namespace conductor::python {

void bind_errors(pybind11::module_& module);  // errors.cpp
void bind_values(pybind11::module_& module);  // values.cpp
void bind_active(pybind11::module_& module);  // active.cpp: Server, Client, Controller

}  // namespace conductor::python
