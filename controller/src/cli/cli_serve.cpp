#include <csignal>
#include <ostream>
#include <thread>

#include "lifecycle_wiring.hpp"
#include "nodeform/args.hpp"
#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/cli.hpp"
#include "nodeform/controller/config.hpp"
#include "nodeform/controller/lifecycle/reconciler.hpp"
#include "nodeform/controller/store/sqlite.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/controller/store/store_location.hpp"
#include "nodeform/random.hpp"
#include "nodeform/site/site.hpp"
#include "nodeform/tls.hpp"

namespace nodeform::controller {
namespace {

constexpr const char* kServeUsage = R"(usage: nodeform-controller serve --site DIR --state DIR [OPTIONS]

Serves resolved specs, enrollment and reports (docs/protocol.md) over HTTPS.
On first start it creates STATE/tls/ (a site CA and a server certificate, ECDSA P-256) and prints the
CA's SHA-256 fingerprint for seeds, and STATE/operator-token (0600) for the operator endpoints.
Settings come from defaults < the config file < these options; the file (/etc/nodeform/controller.yaml,
or --config FILE) uses the same names without "--" (docs/controller.md).

Options:
  --site DIR                 the site configuration directory (reloaded on change and on SIGHUP)
  --state DIR                state directory: nodeform.db, tls/, operator-token
  --store URL                sqlite (default: STATE/nodeform.db) or postgresql://USER@HOST/DB shared by
                             several controllers (no password here: see --store-password-file)
  --store-password-file FILE the PostgreSQL password (or PGPASSWORD, ~/.pgpass)
  --listen HOST:PORT         default 0.0.0.0:8443 (127.0.0.1:8080 with --plain-http)
  --config FILE              config file (default /etc/nodeform/controller.yaml when it exists)
  --plain-http               serve plain HTTP (development on loopback only)
  --tls-cert FILE            certificate chain (PEM) to use instead of the generated one
  --tls-key FILE             its private key
  --tls-hosts A,B            extra names/addresses for the generated server certificate
  --threads N                worker threads = requests handled at once (default 32)
  --max-connections N        open connections, idle ones included; beyond: 503 (default 8192)
  --max-body-bytes N         largest request body (default 1048576)
  --read-timeout D           a whole request must arrive within this (default 5s)
  --write-timeout D          a whole response must be written within this (default 5s)
  --keep-alive-timeout D     idle keep-alive connections close after this (default 5s)
  --auth-failure-limit N     failed authentications per address per window before 429 (default 10)
  --auth-failure-window D    default 60s
  --reports-keep-last N      reports kept per node regardless of age (default 100)
  --reports-keep-days N      reports younger than this are kept (default 30)
  --stale-grace D            a node is stale after 2 x apply.interval_s + this (default 60s)
  --reload-interval D        how often the site files are checked for changes (default 1s)
  --access-log true|false    log every request (default true)
  --log-level LEVEL          debug, info, notice, warning, error (default info)

Lifecycle reconciler (queued 'node create' / 'node destroy', docs/controller.md):
  --lifecycle true|false     run it (default true)
  --lifecycle-interval D     how often the node records are scanned for work (default 2s)
  --lease-ttl D              a node's lease lasts this long without a heartbeat (default 60s)
  --lifecycle-parallel N     nodes worked on at once by this controller (default 4)
  --lifecycle-retries N      a failed node is retried at most N times (default 5)
  --lifecycle-retry-backoff D  first retry after D, then doubling up to 10m (default 30s)
  --ca-fingerprint HEX       the CA SHA-256 put into seeds (default: the generated STATE/tls/ca.pem's)
  --endpoint NAME=URL        use URL for the site's Proxmox endpoint NAME (e.g. a test stand-in)
)";

}  // namespace

int cmd_serve(const std::vector<std::string>& args, CliIo io) {
    int code = 0;
    auto parsed =
        parse_command_args(args, serve_arg_spec(), "nodeform-controller serve", kServeUsage, io.out, io.err, code);
    if (!parsed) return code;
    if (!parsed->positionals.empty()) {
        io.err << "nodeform-controller serve: unexpected argument '" << parsed->positionals[0] << "'\n";
        return exit_code::usage;
    }
    auto config = load_controller_config(*parsed);
    if (!config) {
        io.err << "nodeform-controller serve: " << config.message() << "\n";
        return exit_code::config;
    }
    if (config->site.empty() || config->state.empty()) {
        io.err << "nodeform-controller serve: --site DIR and --state DIR are required (or site:/state: in "
               << (config->config_file.empty() ? std::string(kDefaultConfigFile) : config->config_file) << ")\n";
        return exit_code::usage;
    }
    auto logger =
        make_default_logger("nodeform-controller", parse_log_level(config->log_level).value_or(LogLevel::info));
    auto random = make_system_random();
    auto prepared = prepare_state(*config, "", *random);
    if (!prepared) {
        io.err << "nodeform-controller serve: " << prepared.message() << "\n";
        return exit_code::runtime;
    }
    if (prepared->generated_operator_token)
        io.out << "created the operator token in " << config->state << "/operator-token (mode 0600)\n";
    if (!prepared->ca_fingerprint.empty()) {
        io.out << (prepared->generated_tls ? "created the site CA " : "site CA ") << config->state
               << "/tls/ca.pem, SHA-256 fingerprint:\n  " << prepared->ca_fingerprint << "\n  ("
               << tls::colon_fingerprint(prepared->ca_fingerprint) << ")\n";
    }
    io.out.flush();
    auto where = store_location(*config);
    if (!where) {
        io.err << "nodeform-controller serve: " << where.message() << "\n";
        return exit_code::config;
    }
    auto store = open_store(*where);
    if (!store) {
        io.err << "nodeform-controller serve: " << store.message() << "\n";
        return exit_code::runtime;
    }
    auto lifecycle = open_lifecycle_store(*where);
    if (!lifecycle) {
        io.err << "nodeform-controller serve: " << lifecycle.message() << "\n";
        return exit_code::runtime;
    }
    logger->info("store: " + where->describe());  // the URL without its password
    auto source = make_directory_site_source(config->site);
    SystemClock clock;
    auto notifier = make_systemd_notifier();

    // Signals are taken synchronously by one thread: SIGHUP reloads, SIGTERM/SIGINT stop.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    ControllerServer server(*config, **store, *source, clock, *logger, *notifier, *random,
                            ServerSecrets{hash_secret(prepared->operator_token)}, lifecycle->get());
    if (auto st = server.start(); !st) {
        io.err << "nodeform-controller serve: " << st.message() << "\n";
        return st.message().rfind("the site is invalid", 0) == 0 ? exit_code::config : exit_code::runtime;
    }
    // The lifecycle reconciler: its own Lifecycle over the same stores, on the server's site snapshot.
    LifecycleWiring wiring;
    std::unique_ptr<lifecycle::Lifecycle> lifecycle_runner;
    std::unique_ptr<lifecycle::Reconciler> reconciler;
    if (config->lifecycle) {
        lifecycle::LifecycleOptions lo;
        lo.ca_fingerprint = config->ca_fingerprint.empty() ? prepared->ca_fingerprint : config->ca_fingerprint;
        lo.report_timeout = std::chrono::milliseconds(0);  // validating: look once per pass, never block
        auto deps = lifecycle_deps(**store, **lifecycle, clock, logger.get(), wiring);
        deps.may_continue = [&reconciler](const std::string& id) { return !reconciler || reconciler->holds(id); };
        lifecycle_runner = std::make_unique<lifecycle::Lifecycle>(std::move(deps), lo);
        lifecycle::ReconcilerOptions ro;
        ro.holder = lifecycle::lease_holder_name(random_hex(*random, 4));
        ro.interval = config->lifecycle_interval;
        ro.lease_ttl = config->lease_ttl;
        ro.parallel = config->lifecycle_parallel;
        ro.retries = config->lifecycle_retries;
        ro.retry_backoff = config->lifecycle_retry_backoff;
        // The site the server serves (its snapshot: reloaded only when the files change, and agreed between
        // controllers), with the --endpoint overrides applied once per snapshot.
        struct Served {
            std::shared_ptr<const site::Site> snapshot, overridden;
        };
        auto load = [&server, endpoints = config->endpoints, &logger,
                     cache = std::make_shared<Served>()]() -> std::shared_ptr<const site::Site> {
            auto snapshot = server.current_site();
            if (!snapshot || endpoints.empty()) return snapshot;
            if (snapshot != cache->snapshot) {
                auto site = std::make_shared<site::Site>(*snapshot);
                auto st = override_endpoints(*site, endpoints);
                if (!st) logger->error("lifecycle reconciler: " + st.message());
                *cache = Served{snapshot, st ? std::move(site) : nullptr};
            }
            return cache->overridden;
        };
        logger->info("lifecycle reconciler: holder " + ro.holder);
        reconciler = std::make_unique<lifecycle::Reconciler>(*lifecycle_runner, **lifecycle, clock, *logger,
                                                             std::move(load), ro);
        reconciler->start();
    }
    io.out << "listening on " << (config->plain_http ? "http://" : "https://") << config->listen_host << ":"
           << server.port() << "\n";
    io.out.flush();
    std::atomic<bool> done{false};
    std::thread signals([&] {
        timespec timeout{0, 200 * 1000 * 1000};
        while (!done) {
            int sig = sigtimedwait(&set, nullptr, &timeout);
            if (sig == SIGHUP) {
                notifier->notify("RELOADING=1");
                logger->notice("SIGHUP: reloading the site");
                (void)server.reload();
                notifier->notify("READY=1");
            } else if (sig == SIGTERM || sig == SIGINT) {
                logger->notice("stopping");
                notifier->notify("STOPPING=1");
                server.stop();
                return;
            }
        }
    });
    auto st = server.run();
    done = true;
    if (reconciler) reconciler->stop();
    signals.join();
    if (!st) {
        io.err << "nodeform-controller serve: " << st.message() << "\n";
        return exit_code::runtime;
    }
    return exit_code::ok;
}

}  // namespace nodeform::controller
