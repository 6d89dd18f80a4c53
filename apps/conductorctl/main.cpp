// conductorctl: steers a running conductor-server over its own endpoint (the original's
// "frontend"). Exit codes: 0 ok, 1 unexpected error (also an unusable key file), 2 bad
// arguments (also a key file named by --server-key-file, --key-pair or their variables that
// is missing or unreadable), 3 refused by the server, 6 no reply from the server (also: a CURVE handshake the
// server refused) or a prediction not complete within --wait.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "conductor/controller.hpp"
#include "conductor/error.hpp"
#include "conductor/keys.hpp"
#include "conductor/terminal.hpp"
#include "output.hpp"
#include "watch.hpp"

namespace {

struct CtlOptions {
  std::string server;  // --server or HOST, else $CONDUCTOR_HOST
  double timeout = 10;
  conductor::KeyFlags keys;  // as given; resolved into server_key and key_file
  std::string server_key;          // empty: no CURVE
  std::filesystem::path key_file;  // the operator's key pair; empty: default_operator_key_file()
  bool json = false, print_key = false, watch = false;
  double interval = 1;  // status --watch
  std::string command;  // the subcommand
  std::string version, fraction, folder, name, rows_file, by, order, item, requirement;
  int target = 0, top = 0;
  double wait = 1200;
};

// Detected before anything is sent: exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr std::size_t kMaxRowsBytes = 1000 * 1000;  // the Controller takes about 1 MiB

const CLI::Validator kSeconds(
    [](std::string& text) {
      double seconds = 0;
      bool ok = CLI::detail::lexical_cast(text, seconds) && seconds > 0 && seconds < 1e7;
      return ok ? std::string{} : "'" + text + "' is not a number of seconds > 0";
    },
    "SECONDS");

std::chrono::milliseconds ms(double seconds) {
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

std::string read_rows(const std::string& file) {
  std::ifstream in;
  if (file != "-") in.open(file, std::ios::binary);
  if (file != "-" && !in) throw UsageError("cannot read the prediction rows file '" + file + "'");
  std::istream& source = file == "-" ? std::cin : in;
  std::string rows{std::istreambuf_iterator<char>(source), {}};
  if (rows.empty()) throw UsageError("prediction rows '" + file + "' refused: empty");
  if (rows.size() > kMaxRowsBytes) {
    throw UsageError("prediction rows '" + file + "' refused: " + std::to_string(rows.size()) +
                     " bytes, at most " + std::to_string(kMaxRowsBytes));
  }
  return rows;
}

std::unique_ptr<conductor::Controller> connect(const CtlOptions& o) {
  try {
    return std::make_unique<conductor::Controller>(o.server, ms(o.timeout), o.server_key, o.key_file);
  } catch (const conductor::Error& e) {
    throw UsageError(e.what());  // a malformed address
  }
}

// status --watch: views until Ctrl-C.
void watch(const CtlOptions& o) {
  auto controller = connect(o);
  conductor::ctl::WatchOptions options{ms(o.interval), o.json,
                                       conductor::is_interactive_terminal(STDOUT_FILENO), o.server};
  conductor::ctl::watch_status([&] { return controller->call("status"); }, options, std::cout);
}

// Runs the subcommand and returns the server's reply body.
std::string run(const CtlOptions& o) {
  const std::string rows = o.command == "predict" ? read_rows(o.rows_file) : "";
  auto controller = connect(o);
  if (o.command == "add-version") return controller->add_version(o.folder, o.name);
  std::map<std::string, std::string> args;
  if (!o.version.empty()) args["version"] = o.version;
  if (o.command == "set-reserve") args["fraction"] = o.fraction;
  if (o.command == "set-target") args["target"] = std::to_string(o.target);
  if (o.command == "set-requirement") args["requires"] = o.requirement;
  if (o.command == "explain") args["item"] = o.item;
  if (o.command == "queue") return controller->call("status", args);  // listed from the status
  if (o.command != "predict") return controller->call(o.command, args);
  if (o.top > 0) args.insert({{"top", std::to_string(o.top)}, {"by", o.by}});
  if (!o.order.empty() && o.order != "auto") args["order"] = o.order;
  return controller->predict(rows, args, ms(o.wait));
}

// The exit codes documented at the top.
int exit_code_for(const std::exception& e) {
  if (dynamic_cast<const UsageError*>(&e)) return 2;
  const auto* error = dynamic_cast<const conductor::Error*>(&e);
  if (error == nullptr) return 1;
  switch (error->code()) {
    case conductor::ErrorCode::kTransport: return 6;
    case conductor::ErrorCode::kArgument: return 3;  // the server's refusal
    case conductor::ErrorCode::kPackage: return 2;   // a folder that cannot be packed
    default: return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"conductorctl: status, models, targets, versions and predictions of a server."};
  CtlOptions o;
  app.require_subcommand(0, 1);
  app.fallthrough();  // --json, --timeout and --server may follow the subcommand
  app.add_option("HOST", o.server, "Server as host:port or tcp://host:port (else $CONDUCTOR_HOST)");
  app.add_option("--server", o.server, "Same as HOST");
  app.add_option("--timeout", o.timeout, "Seconds to wait for each reply (default 10)")
      ->check(kSeconds);
  app.add_flag("--json", o.json, "Print the server's reply as JSON, for scripts");
  auto* server_key = app.add_option("--server-key", o.keys.server_key,
                                    "The server's CurveZMQ public key (else --server-key-file, "
                                    "$CONDUCTOR_SERVER_KEY, $CONDUCTOR_SERVER_KEY_FILE; none: plain TCP)");
  app.add_option("--server-key-file", o.keys.server_key_file,
                 "File whose first word is the server's public key")
      ->excludes(server_key);
  auto* key_file = app.add_option("--key-file", o.keys.key_file,
                                  "Operator key pair, created when missing (else --key-pair, "
                                  "$CONDUCTOR_KEY_PAIR_FILE, $CONDUCTOR_KEY_FILE, "
                                  "~/.config/conductor/operator.key)");
  app.add_option("--key-pair", o.keys.key_pair,
                 "An existing operator key pair, never created (owner and group may read it)")
      ->excludes(key_file);
  app.add_flag("--print-key", o.print_key, "Print the operator's public key (creating it), exit");
  auto with_version = [&](CLI::App* command) {
    command->add_option("VERSION", o.version)->required();
    return command;
  };
  auto* status = app.add_subcommand("status", "Clients, queued and active items, versions");
  auto* watch_flag = status->add_flag("--watch", o.watch,
                                      "Show the status again every --interval until Ctrl-C; on a "
                                      "terminal in place, with a progress bar per version");
  status->add_option("--interval", o.interval, "Seconds between views (default 1)")
      ->check(kSeconds)->needs(watch_flag);
  app.add_subcommand("queue", "Every queued and active item with its full id");
  app.add_subcommand("explain", "Why ITEM (an id or its first characters) waits, or where it runs")
      ->add_option("ITEM", o.item)->required();
  with_version(app.add_subcommand("models", "Stored models of VERSION with their metrics"));
  app.add_subcommand("set-reserve", "Fraction of the clients kept free for predictions")
      ->add_option("FRACTION", o.fraction)->required()->check(CLI::Range(0.0, 1.0));
  with_version(app.add_subcommand("set-target", "Number of models VERSION should have"))
      ->add_option("N", o.target)->required()->check(CLI::Range(0, 1000000));
  with_version(app.add_subcommand("set-requirement", "Which clients may run VERSION's items"))
      ->add_option("UNIT", o.requirement, "gpu, cpu or any")->required()
      ->check(CLI::IsMember({"any", "cpu", "gpu"}));
  auto* add = app.add_subcommand("add-version", "Upload DIR (with version.xml) as a local version");
  add->add_option("DIR", o.folder)->required()->check(CLI::ExistingDirectory);
  add->add_option("--name", o.name, "Version name (default: the folder's name)");
  with_version(app.add_subcommand("remove-version", "Stop training VERSION (models stay on disk)"));
  with_version(app.add_subcommand("select", "Make VERSION the current one (for predictions)"));
  auto* predict = app.add_subcommand("predict", "Ensemble prediction over FILE.csv ('-': stdin)");
  predict->add_option("--version", o.version, "Version (default: the current one)");
  auto* by = predict->add_option("--by", o.by, "Metric that ranks the models for --top");
  predict->add_option("--top", o.top, "Only the best K models by --by")->needs(by)
      ->check(CLI::Range(1, 100000));
  predict->add_option("--order", o.order, "Higher (desc) or lower (asc) is better; auto: by name")
      ->check(CLI::IsMember({"auto", "asc", "desc"}));
  predict->add_option("--wait", o.wait, "Seconds to wait for the ensemble (default 1200)")
      ->check(kSeconds);
  predict->add_option("FILE", o.rows_file, "CSV rows sent as predictiondata.csv")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is not an error; everything else is exit 2
  }
  if (const char* host = std::getenv("CONDUCTOR_HOST"); o.server.empty() && host) o.server = host;
  try {
    o.server_key = conductor::resolve_server_key(o.keys);
    o.key_file = conductor::resolve_key_pair(o.keys);
  } catch (const conductor::Error& e) {
    std::cerr << "conductorctl: " << e.what() << '\n';
    return 2;
  }
  try {
    if (o.print_key) {
      auto file = o.key_file.empty() ? conductor::default_operator_key_file() : o.key_file;
      std::cout << conductor::public_key_of(file) << '\n';
      return 0;
    }
    if (app.get_subcommands().empty()) throw UsageError("a subcommand is required (see --help)");
    o.command = app.get_subcommands().front()->get_name();
    if (o.server.empty()) throw UsageError("no server given: pass HOST or set CONDUCTOR_HOST");
    if (o.watch) {
      watch(o);
      return 0;
    }
    auto body = nlohmann::json::parse(run(o));
    if (o.json) {
      std::cout << body.dump(2) << '\n';
    } else {
      conductor::ctl::print_readable(o.command, body, std::cout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "conductorctl: " << e.what() << '\n';
    return exit_code_for(e);
  }
}
