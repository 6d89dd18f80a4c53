// HttpEndpoint on 127.0.0.1: what each path answers from the published snapshot, how it waits
// for a fresh one, and which addresses it refuses.
#include "http_endpoint.hpp"

#include <doctest/doctest.h>
#include <httplib.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "conductor/error.hpp"

using conductor::Error;
using conductor::ErrorCode;
using conductor::HttpEndpoint;
using conductor::HttpSnapshot;
using conductor::parse_http_address;
using json = nlohmann::json;

namespace {

int port_of(const std::string& url) { return std::stoi(url.substr(url.rfind(':') + 1)); }

httplib::Result get(const HttpEndpoint& endpoint, const std::string& path) {
  httplib::Client client("127.0.0.1", port_of(endpoint.url()));
  client.set_read_timeout(10, 0);
  return client.Get(path.c_str());
}

std::shared_ptr<HttpSnapshot> snapshot_with(int stored) {
  auto snapshot = std::make_shared<HttpSnapshot>();
  snapshot->metrics.versions = {{"digits", stored, 8}};
  snapshot->status = {{"versions", json::array({{{"name", "digits"}, {"stored", stored}}})}};
  return snapshot;
}

}  // namespace

TEST_CASE("HTTP addresses are PORT, HOST:PORT or [IPv6]:PORT") {
  CHECK(parse_http_address("9090").host == "127.0.0.1");
  CHECK(parse_http_address("9090").port == 9090);
  CHECK(parse_http_address("0.0.0.0:80").host == "0.0.0.0");
  CHECK(parse_http_address("*:0").host == "0.0.0.0");
  CHECK(parse_http_address("localhost:1").host == "localhost");
  CHECK(parse_http_address("[::1]:65535").host == "::1");
  CHECK(parse_http_address("[::1]:65535").port == 65535);
  for (const char* bad : {"", "x", "65536", "host:", ":80", "::1:80", "127.0.0.1:8o", "1234567"}) {
    INFO("address: " << bad);
    try {
      parse_http_address(bad);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::kArgument);
      CHECK(std::string(e.what()).find("HTTP address '" + std::string(bad) + "' refused") == 0);
    }
  }
}

TEST_CASE("the HTTP endpoint serves metrics, status and the dashboard from the latest snapshot") {
  HttpEndpoint endpoint("127.0.0.1:0");
  CHECK(endpoint.url().starts_with("http://127.0.0.1:"));
  CHECK(port_of(endpoint.url()) > 0);
  CHECK_FALSE(endpoint.is_public());
  endpoint.publish(snapshot_with(3));

  auto metrics = get(endpoint, "/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->get_header_value("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(metrics->body.find("\nconductor_version_models_stored{version=\"digits\"} 3\n") !=
        std::string::npos);
  CHECK(metrics->body.find("\nconductor_version_models_target{version=\"digits\"} 8\n") !=
        std::string::npos);

  auto status = get(endpoint, "/api/status");
  REQUIRE(status);
  CHECK(status->status == 200);
  CHECK(status->get_header_value("Content-Type") == "application/json");
  CHECK(status->get_header_value("Cache-Control") == "no-store");
  CHECK(json::parse(status->body)["versions"][0]["stored"] == 3);

  auto page = get(endpoint, "/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type") == "text/html; charset=utf-8");
  CHECK(page->get_header_value("Content-Security-Policy").find("default-src 'self'") == 0);
  CHECK(page->body.find("<script src=\"/dashboard.js\"") != std::string::npos);
  for (const char* asset : {"/dashboard.js", "/dashboard.css"}) {
    auto file = get(endpoint, asset);
    REQUIRE(file);
    CHECK(file->status == 200);
    CHECK(file->body.size() > 100);
  }
  CHECK(get(endpoint, "/dashboard.js")->body.find("/api/status") != std::string::npos);

  auto missing = get(endpoint, "/admin");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(missing->body == "not found: /admin (try /, /metrics, /api/status or /healthz)\n");

  // A newer snapshot replaces the old one for every later request.
  endpoint.publish(snapshot_with(4));
  CHECK(json::parse(get(endpoint, "/api/status")->body)["versions"][0]["stored"] == 4);
}

TEST_CASE("a request asks the network thread for a fresh snapshot and takes it when it comes") {
  HttpEndpoint endpoint("127.0.0.1:0");
  endpoint.publish(snapshot_with(1));
  CHECK_FALSE(endpoint.is_snapshot_wanted());
  auto answer = std::async(std::launch::async, [&] { return get(endpoint, "/api/status")->body; });
  // Play the network thread: publish once a request wants it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!endpoint.is_snapshot_wanted() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE(endpoint.is_snapshot_wanted());
  endpoint.publish(snapshot_with(2));
  CHECK_FALSE(endpoint.is_snapshot_wanted());
  CHECK(json::parse(answer.get())["versions"][0]["stored"] == 2);
}

TEST_CASE("without a fresh snapshot a request is answered from the last one") {
  HttpEndpoint endpoint("127.0.0.1:0");
  endpoint.publish(snapshot_with(5));
  // Nobody publishes: the answer comes after HttpEndpoint::kSnapshotWait, from the old one.
  CHECK(json::parse(get(endpoint, "/api/status")->body)["versions"][0]["stored"] == 5);
  CHECK(endpoint.is_snapshot_wanted());
}

TEST_CASE(
    "/healthz is 503 before the first snapshot, 200 while snapshots come, 503 once they stop") {
  using namespace std::chrono_literals;
  HttpEndpoint endpoint("127.0.0.1:0", 600ms);
  auto starting = get(endpoint, "/healthz");
  REQUIRE(starting);
  CHECK(starting->status == 503);
  CHECK(starting->body == "starting: the server has not served yet\n");

  endpoint.publish(snapshot_with(1));
  auto healthy = get(endpoint, "/healthz");
  REQUIRE(healthy);
  CHECK(healthy->status == 200);
  CHECK(healthy->body == "ok\n");
  CHECK(healthy->get_header_value("Content-Type") == "text/plain; charset=utf-8");
  CHECK(healthy->get_header_value("Cache-Control") == "no-store");

  // Nobody plays the network thread any more: once the last snapshot is older than the
  // limit, the probe fails and says why.
  std::this_thread::sleep_for(700ms);
  auto stalled = get(endpoint, "/healthz");
  REQUIRE(stalled);
  CHECK(stalled->status == 503);
  CHECK(stalled->body.starts_with("stalled: the server's network thread answered nothing for "));
  CHECK(endpoint.is_snapshot_wanted());  // the probe asked for one, as a scrape does

  endpoint.publish(snapshot_with(2));  // the thread turns again
  CHECK(get(endpoint, "/healthz")->status == 200);
}

TEST_CASE("text that is not UTF-8 in the status does not fail the answer") {
  HttpEndpoint endpoint("127.0.0.1:0");
  auto snapshot = std::make_shared<HttpSnapshot>();
  snapshot->status = {{"clients", json::array({{{"host", "bad\xff" "byte"}}})}};
  endpoint.publish(snapshot);
  auto status = get(endpoint, "/api/status");
  REQUIRE(status);
  CHECK(status->status == 200);
  CHECK(json::parse(status->body)["clients"][0]["host"] == "bad\xEF\xBF\xBD" "byte");
}

TEST_CASE("an HTTP address in use or not of this machine is refused with TransportError") {
  HttpEndpoint first("127.0.0.1:0");
  const std::string taken = "127.0.0.1:" + std::to_string(port_of(first.url()));
  CHECK_THROWS_AS(HttpEndpoint{taken}, conductor::TransportError);
  CHECK_THROWS_AS(HttpEndpoint{"192.0.2.1:0"}, conductor::TransportError);  // TEST-NET-1
  CHECK_THROWS_WITH_AS(HttpEndpoint{"not a port"}, doctest::Contains("refused"), Error);
}
