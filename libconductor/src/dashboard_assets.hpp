// The dashboard's files (src/dashboard/), embedded in the library at build time
// (dashboard_assets.cpp.in), so the server serves its page with no files beside it.
#pragma once

#include <string_view>

namespace conductor {

struct DashboardAsset {
  std::string_view path;          // as requested: "/", "/dashboard.js", ...
  std::string_view content_type;
  std::string_view body;
};

// Every file of the dashboard; `path` "/" is the page itself.
const DashboardAsset* dashboard_assets_begin() noexcept;
const DashboardAsset* dashboard_assets_end() noexcept;

}  // namespace conductor
