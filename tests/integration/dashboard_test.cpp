// The dashboard page in a real browser: Debian's headless Chromium loads it from the server
// while clients train, runs its script against /api/status, and the DOM it dumps shows the
// run's numbers: clients with state and epoch, stored/target per version, the queue, the log,
// and later an ensemble result. The page must redraw itself: within one page load, between
// two of its polls, the run changes, and the DOM shows the change.
#include <doctest/doctest.h>
#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
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

// A loopback HTTP proxy in front of the server's endpoint, for the browser: it passes every
// GET on, keeps the /api/status answers it passed, and holds the `hold_at`-th /api/status
// request (before asking the server) until release(). Chromium's virtual time stands still
// while a fetch is unanswered, so the test can change the run between two polls of one page.
class HoldingProxy {
 public:
  HoldingProxy(std::string upstream, int hold_at)
      : upstream_(std::move(upstream)), hold_at_(hold_at) {
    server_.Get(".*", [this](const httplib::Request& request, httplib::Response& response) {
      pass(request, response);
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~HoldingProxy() {
    release();
    server_.stop();
    thread_.join();
  }
  HoldingProxy(const HoldingProxy&) = delete;
  HoldingProxy& operator=(const HoldingProxy&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // True once the request to hold has come (it waits then), false after `timeout`.
  bool wait_for_hold(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return held_; });
  }

  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }

  std::vector<std::string> status_answers() const {
    std::lock_guard lock(mutex_);
    return answers_;
  }

 private:
  void pass(const httplib::Request& request, httplib::Response& response) {
    const bool is_status = request.path == "/api/status";
    if (is_status) {
      std::unique_lock lock(mutex_);
      if (++status_requests_ == hold_at_) {
        held_ = true;
        changed_.notify_all();
        changed_.wait(lock, [&] { return released_; });
      }
    }
    httplib::Client client(upstream_);
    client.set_read_timeout(10, 0);
    auto result = client.Get(request.path.c_str());
    if (!result) {
      response.status = 502;
      return;
    }
    response.status = result->status;
    response.set_content(result->body, result->get_header_value("Content-Type").c_str());
    if (is_status) {
      std::lock_guard lock(mutex_);
      answers_.push_back(result->body);
    }
  }

  std::string upstream_;
  int hold_at_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int status_requests_ = 0;
  bool held_ = false;
  bool released_ = false;
  std::vector<std::string> answers_;
};

// The page's DOM after its script ran for a few (virtual) seconds, as Chromium dumps it;
// `meanwhile` runs after Chromium started.
std::string rendered_dom(const Cluster& cluster, const std::string& url,
                         const std::function<void()>& meanwhile = {}) {
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
  if (meanwhile) meanwhile();
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

// The element <table id="<id>"> up to its </table>.
std::string table_of(const std::string& dom, const std::string& id) {
  const auto start = dom.find("<table id=\"" + id + "\"");
  if (start == std::string::npos) return "<missing>";
  return dom.substr(start, dom.find("</table>", start) - start);
}

// data-polls of #connection: how many answers the page has drawn; -1 when absent.
int polls_of(const std::string& dom) {
  std::smatch match;
  static const std::regex kPolls(R"re(<p id="connection"[^>]*data-polls="(\d+)")re");
  if (!std::regex_search(dom, match, kPolls)) return -1;
  return std::stoi(match[1]);
}

// The <tr ...> element whose attribute `attribute` is `value`, up to its </tr>.
std::string row_of(const std::string& dom, const std::string& attribute, const std::string& value) {
  const auto start = dom.find("<tr " + attribute + "=\"" + value + "\"");
  if (start == std::string::npos) return "<missing>";
  return dom.substr(start, dom.find("</tr>", start) - start);
}

}  // namespace

TEST_SUITE("http") {

TEST_CASE("the dashboard in headless Chromium redraws itself: clients, versions, queue, log and "
          "ensembles") {
  Cluster cluster("conductor-dashboard");
  const fs::path go = cluster.root() / "go";
  ReleaseOnExit release(go);
  // Target 5, one model stored: three items run on the three slots, one waits in the queue.
  VersionSpec spec{"g", 5, conductor::test::held_training_script(go), {},
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
                                      status["queued_count"] == 1 &&
                                      status["clients"][0]["items"].size() +
                                              status["clients"][1]["items"].size() == 3 &&
                                      status["clients"][0]["items"].back()["epoch"] == 2 &&
                                      status["clients"][1]["items"].back()["epoch"] == 2;
                             }),
                  cluster.diagnostics());

  // One page load: after its first poll the target goes up to 6 (one more item queued); the
  // page's later polls must show it.
  HoldingProxy proxy(url, 2);
  std::string dom = rendered_dom(cluster, proxy.url(), [&] {
    REQUIRE_MESSAGE(proxy.wait_for_hold(60s), "the page never polled /api/status twice");
    auto raised = cluster.ctl({"set-target", "g", "6"});
    REQUIRE_MESSAGE(raised.status.exited_with(0), raised.err << cluster.diagnostics());
    REQUIRE(wait_until(deadline_in(10s), [&] { return api_status(url)["queued_count"] == 2; }));
    proxy.release();
  });
  INFO("DOM:\n" << dom);
  const auto answers = proxy.status_answers();
  REQUIRE(answers.size() >= 2);
  const auto first = nlohmann::json::parse(answers.front());  // what the first poll drew
  CHECK(first["versions"][0]["target"] == 5);
  CHECK(first["queued_count"] == 1);
  CHECK(polls_of(dom) >= 2);
  CHECK(polls_of(dom) <= static_cast<int>(answers.size()));
  CHECK(text_of_id(dom, "clients-count") == "2");
  CHECK(text_of_id(dom, "queued-count") == "2");
  CHECK(text_of_id(dom, "active-count") == "3");
  CHECK(text_of_id(dom, "models-count") == "1/6");
  const std::string version = row_of(dom, "data-version", "g");
  CHECK(version.find("<td class=\"models number\">1/6</td>") != std::string::npos);
  CHECK(std::regex_search(version, std::regex(R"(<progress max="6" value="1">)")));
  CHECK(version.find("<td class=\"queued number\">2</td>") != std::string::npos);
  CHECK(version.find("<td class=\"active number\">3</td>") != std::string::npos);
  CHECK(version.find("current") != std::string::npos);
  CHECK(count_of(dom, "<td class=\"state state-working\">working</td>") == 2);
  CHECK(count_of(dom, "<progress max=\"4\" value=\"2\">2/4</progress> 2/4") == 3);  // every item
  CHECK(dom.find("<td class=\"slots number\">2/2</td>") != std::string::npos);  // alpha
  CHECK(dom.find("<td class=\"slots number\">1/1</td>") != std::string::npos);  // beta
  CHECK(std::regex_search(dom, std::regex(R"(<td class="item">\[0\] \w{8} g<br>\[1\] \w{8} g</td>)")));
  CHECK(dom.find("<td class=\"host\">alpha</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"host\">beta</td>") != std::string::npos);
  CHECK(text_of_id(dom, "queue-summary").starts_with("2 queued (2 training), 3 active"));
  const std::string queue = table_of(dom, "queue");
  CHECK(count_of(queue, "<tr data-item=") == 2);  // a row per queued item
  CHECK(std::regex_search(queue, std::regex(R"(<td>\w{8}</td><td>training</td><td>g</td>)")));
  CHECK(count_of(table_of(dom, "active"), "<tr data-item=") == 3);
  CHECK(text_of_id(dom, "log").find("handed to alpha") != std::string::npos);
  CHECK(dom.find("no predictions yet") != std::string::npos);

  // Training ends; a prediction asks each of the six models.
  conductor::test::write_file(go, "go\n");
  REQUIRE_MESSAGE(wait_until(deadline_in(60s), [&] { return cluster.model_ids("g").size() == 6; }),
                  cluster.diagnostics());
  const fs::path rows = conductor::test::write_file(cluster.root() / "rows.csv", "1,2\n");
  auto predict = cluster.ctl({"predict", rows.string(), "--wait", "60"});
  REQUIRE_MESSAGE(predict.status.exited_with(0), predict.err << cluster.diagnostics());

  dom = rendered_dom(cluster, url);
  CHECK(polls_of(dom) >= 2);
  CHECK(text_of_id(dom, "models-count") == "6/6");
  CHECK(row_of(dom, "data-version", "g").find("<td class=\"models number\">6/6</td>") !=
        std::string::npos);
  CHECK(count_of(dom, "<td class=\"state state-idle\">idle</td>") == 2);
  CHECK(text_of_id(dom, "queue-summary").starts_with("0 queued, 0 active"));
  CHECK(dom.find("<td class=\"slots number\">0/2</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"answers number\">6/6</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"mean number\">2.5</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"median number\">2.5</td>") != std::string::npos);
  CHECK(dom.find("<td class=\"failures number\">0</td>") != std::string::npos);
  CHECK(text_of_id(dom, "log").find("(6/6)") != std::string::npos);
}

}  // TEST_SUITE("http")
