#pragma once

// Names the calling thread, as `top -H`, `ps -L`, `perf` and debuggers show it. Linux allows 15
// characters; a longer name is cut, never refused.

#include <pthread.h>

#include <string>
#include <string_view>

namespace conductor {

inline void name_this_thread(std::string_view name) {
  const std::string cut(name.substr(0, 15));
  ::pthread_setname_np(::pthread_self(), cut.c_str());
}

}  // namespace conductor
