// The dashboard page in a real browser: Debian's headless Chromium loads it from the server
// while clients train, runs its script against /api/status, and the DOM it dumps shows the
// run's numbers: clients with state and epoch, stored/target per version, the queue, the log,
// and later an ensemble result.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "cluster.hpp"
#include "http_support.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conductor::test::all_working_at;
using conductor::test::api_status;
using conductor::test::Cluster;
using conductor::test::count_of;
using conductor::test::deadline_in;
using conductor::test::ReleaseOnExit;
using conductor::test::VersionSpec;
using conductor::test::wait_until;

namespace {

const fs::path kChromium = "/usr/bin/chromium";

// The page's DOM after its script ran for a few (virtual) seconds, as Chromium dumps it.
std::string rendered_dom(const Cluster& cluster, const std::string& url) {
  static int runs = 0;
  const std::string stem = "chromium-" + std::to_string(++runs);
  const fs::path profile = cluster.root() / (stem + "-profile");
  fs::create_directories(profile);
  REQUIRE_MESSAGE(fs::exists(kChromium), "the dashboard test needs Debian's chromium "
                                         "(scripts/install-deps installs it)");
  std::vector<std::string> argv = {kChromium.string(), "--headless", "--no-sandbox",
                                   "--disable-gpu", "--no-first-run", "--disable-extensions",
                                   // Containers often give /dev/shm only 64 MiB.
                                   "--disable-dev-shm-usage",
                                   "--user-data-dir=" + profile.string(),
                                   // Timers run on virtual time, so three polls take no
                                   // real seconds; fetches pause it until they are answered.
                                   "--virtual-time-budget=3000", "--dump-dom", url + "/"};
  conductor::test::ChildProcess chromium({argv, cluster.root() / (stem + ".html"),
                                          {{"HOME", profile.string()}}, {},
                                          {}, cluster.root() / (stem + ".err")});
  auto status = chromium.wait_for_exit(120s);
  const std::string dom = chromium.output();
  INFO("chromium stderr (tail): "
       << conductor::test::read_file_if_present(cluster.root() / (stem + ".err")).substr(0, 4000));
  REQUIRE_MESSAGE(status.has_value(), "chromium still runs after 120 s");
  REQUIRE(status->exited_with(0));
  REQUIRE(dom.find("</html>") != std::string::npos);
  return dom;
}

// The text of the first element with id="<id>".
std::string text_of_id(const std::string& dom, const std::string& id) {
  std::smatch match;
  if (!std::regex_search(dom, match, std::regex("id=\"" + id + "\"[^>]*>([^<]*)<"))) return "<missing>";
  return match[1];
}

// The <tr ...> element whose attribute `attribute` is `value`, up to its </tr>.
std::string row_of(const std::string& dom, const std::string& attribute, const std::string& value) {
  const auto start = dom.find("<tr " + attribute + "=\"" + value + "\"");
  if (start == std::string::npos) return "<missing>";
  return dom.substr(start, dom.find("</tr>", start) - start);
}

}  // namespace

TEST_SUITE("http") {

TEST_CASE("the dashboard in headless Chromium shows clients, versions, queue, log and ensembles") {
  Cluster cluster("conductor-dashboard");
  const fs::path go = cluster.root() / "go";
  ReleaseOnExit release(go);
  VersionSpec spec{"g", 4, conductor::test::held_training_script(go), {},
                   "echo 'PredictedBuffer=2.5'\n"};
  conductor::test::write_configuration(cluster.server_dir(), 0.0, {spec});
  conductor::test::store_model(cluster.server_dir(), "g", {{"model.h5", "seeded weights"}});
  const std::string url = conductor::test::start_server_with_http(cluster);
  cluster.start_client("alpha", {}, {"--slots", "2"});  // runs two items at once
  cluster.start_client("beta");
  REQUIRE_MESSAGE(wait_until(deadline_in(30s),
                             [&] {
                               auto status = api_status(url);
                               return all_working_at(status, 2, 2, 4) && status["active"].size() == 3 &&
                                      status["clients"][0]["items"].size() +
                                              status["clients"][1]["items"].size() == 3 &&
                                      status["clients"][0]["items"].back()["epoch"] == 2 &&
                                      status["clients"][1]["items"].back()["epoch"] == 2;
                             }),
                  cluster.diagnostics());

  std::string dom = rendered_dom(cluster, url);
  INFO("DOM:\n" << dom);
  CHECK(text_of_id(dom, "clients-count") == "2");
  CHECK(text_of_id(dom, "queued-count") == "0");
  CHECK(text_of_id(dom, "active-count") == "3");
  CHECK(text_of_id(dom, "models-count") == "1/4");
  const std::string version = row_of(dom, "data-version", "g");
  CHECK(version.find("<td class=\"models number\">1/4</td>") != std::string::npos);
  CHECK(std::regex_search(version, std::regex(R"(<progress max="4" value="1">)")));
  CHECK(version.find("<td class=\"active number\">3</td>") != std::string::npos);
  CHECK(version.find("current") != std::string::npos);
  CHECK(count_of(dom, "<td class=\"state state-working\">working</td>") == 2);
  CHECK(count_of(dom, "<progress max=\"4\" value=\"2\">2/4</progress> 2/4") == 3);  // every item
  CHECK(dom.find("<td class=\"slots number\">2/2</td>") != std::string::npos);  // alpha
  CHECK(dom.find("<td class=\"slots number\">1/1</td>") != std::string::npos);  // beta
  CHECK(std::regex_search(dom, std::regex(R"(<td class="item">\[0\] \w{8} g<br>\[1\] \w{8} g</td>)")));
  CHECK(dom.find("<td class=\"host\">alpha</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"host\">beta</td>") != std::string::npos);
  CHECK(text_of_id(dom, "queue-summary").starts_with("0 queued, 3 active"));
  CHECK(text_of_id(dom, "log").find("handed to alpha") != std::string::npos);
  CHECK(dom.find("no predictions yet") != std::string::npos);

  // Training ends; a prediction asks each of the four models.
  conductor::test::write_file(go, "go\n");
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("g").size() == 4; }),
                  cluster.diagnostics());
  const fs::path rows = conductor::test::write_file(cluster.root() / "rows.csv", "1,2\n");
  auto predict = cluster.ctl({"predict", rows.string(), "--wait", "60"});
  REQUIRE_MESSAGE(predict.status.exited_with(0), predict.err << cluster.diagnostics());

  dom = rendered_dom(cluster, url);
  CHECK(text_of_id(dom, "models-count") == "4/4");
  CHECK(row_of(dom, "data-version", "g").find("<td class=\"models number\">4/4</td>") !=
        std::string::npos);
  CHECK(count_of(dom, "<td class=\"state state-idle\">idle</td>") == 2);
  CHECK(text_of_id(dom, "queue-summary").starts_with("0 queued, 0 active"));
  CHECK(dom.find("<td class=\"slots number\">0/2</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"answers number\">4/4</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"mean number\">2.5</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"median number\">2.5</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"failures number\">0</td>") != std::string::npos);
  CHECK(text_of_id(dom, "log").find("(4/4)") != std::string::npos);
}

}  // TEST_SUITE("http")
