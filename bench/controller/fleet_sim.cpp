// fleet-sim: many simulated agents in one process (Boost.Asio coroutines, Beast, TLS), each with its own
// credential, against one or more controllers (docs/benchmarks.md, "Fleet"). Bench tooling: never installed.
//
// Each agent enrolls with its one-time token, then every --interval (at its own offset within --splay) opens
// one TLS connection to the next controller in turn (as a load balancer would spread it) and on it fetches
// its spec with If-None-Match and posts a report with a report_id unique to (identity, turn). It prints the
// p50/p99 of enroll, fetch and report, the count of reports acknowledged (2xx), and every error by kind.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without including it
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "nodeform/args.hpp"
#include "nodeform/clock.hpp"
#include "nodeform/duration.hpp"
#include "nodeform/report.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage = R"(usage: fleet-sim --controllers URL[,URL...] --ca FILE --tokens FILE [OPTIONS]

Simulates one agent per line of --tokens (JSON lines {"identity","token"} as printed by
`nodeform-controller token issue ID... --json`): enroll, then every interval fetch the spec (ETag) and
post a report, over TLS, spreading turns over the controllers in order. Prints a JSON summary on stdout.

Options:
  --controllers URLS  https://HOST:PORT, comma-separated (HOST an IP address the certificate names)
  --ca FILE           the controllers' CA certificate (PEM)
  --tokens FILE       one {"identity","token"} object per line
  --interval DURATION time between an agent's turns (default 60s)
  --splay DURATION    agents' offsets and first enrollments spread over this (default: the interval)
  --duration DURATION how long to run after the start (default 300s); turns begun by then finish
  --progress DURATION a progress line on stderr this often (default 10s)
Exit codes: 0 ran (errors are counted in the summary), 2 usage, 3 configuration (files, URLs).
)";

struct Endpoint {
    std::string host;
    std::string port;
};

struct Samples {
    std::vector<double> ms;
    std::uint64_t ok = 0;
    std::map<std::string, std::uint64_t> errors;  // "status 503", "connect: ...", ...
    void add(double took, bool good, const std::string& error = {}) {
        ms.push_back(took);
        if (good)
            ++ok;
        else
            ++errors[error];
    }
    nlohmann::json summary() {
        std::sort(ms.begin(), ms.end());
        auto pct = [this](double p) {
            if (ms.empty()) return 0.0;
            return ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * static_cast<double>(ms.size())))];
        };
        std::uint64_t failed = 0;
        for (const auto& [kind, n] : errors)
            failed += n;
        return {{"count", ms.size()},   {"ok", ok},
                {"errors", failed},     {"p50_ms", pct(0.50)},
                {"p99_ms", pct(0.99)},  {"max_ms", ms.empty() ? 0.0 : ms.back()},
                {"error_kinds", errors}};
    }
};

struct Agent {
    std::string identity;
    std::string token;
    std::string credential;
    std::string etag;
    Ms offset{0};
};

struct Sim {
    asio::io_context io;
    asio::ssl::context tls{asio::ssl::context::tls_client};
    std::vector<Endpoint> endpoints;
    Ms interval{60000};
    Ms splay{60000};
    SteadyClock::time_point start = SteadyClock::now();
    SteadyClock::time_point end;
    Samples enroll, fetch, report;
    std::uint64_t not_modified = 0;
    std::uint64_t turns = 0;
    std::size_t enrolled = 0;
    nodeform::SystemClock clock;
};

double since(SteadyClock::time_point t) {
    return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

using Stream = beast::ssl_stream<beast::tcp_stream>;

// One TLS connection to endpoint; nullptr with error set when it could not be made.
awaitable<std::unique_ptr<Stream>> connect(Sim& sim, const Endpoint& ep, std::string& error) {
    auto stream = std::make_unique<Stream>(co_await asio::this_coro::executor, sim.tls);
    stream->set_verify_callback(asio::ssl::rfc2818_verification(ep.host));
    asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
    try {
        auto results = co_await resolver.async_resolve(ep.host, ep.port, use_awaitable);
        beast::get_lowest_layer(*stream).expires_after(std::chrono::seconds(30));
        co_await beast::get_lowest_layer(*stream).async_connect(results, use_awaitable);
        co_await stream->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    } catch (const boost::system::system_error& e) {
        error = "connect: " + e.code().message();
        co_return nullptr;
    }
    co_return stream;
}

// One request on stream; the response, or nullopt with error set.
awaitable<std::optional<http::response<http::string_body>>> exchange(Stream& stream,
                                                                     http::request<http::string_body>& request,
                                                                     std::string& error) {
    try {
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
        request.prepare_payload();
        co_await http::async_write(stream, request, use_awaitable);
        beast::flat_buffer buffer;
        http::response<http::string_body> response;
        co_await http::async_read(stream, buffer, response, use_awaitable);
        co_return response;
    } catch (const boost::system::system_error& e) {
        error = "exchange: " + e.code().message();
        co_return std::nullopt;
    }
}

http::request<http::string_body> make_request(http::verb verb, const std::string& target, const Endpoint& ep) {
    http::request<http::string_body> request{verb, target, 11};
    request.set(http::field::host, ep.host + ":" + ep.port);
    request.set(http::field::user_agent, "fleet-sim");
    request.keep_alive(true);
    return request;
}

std::string report_body(Sim& sim, const Agent& agent, std::uint64_t turn) {
    nodeform::protocol::Report r;
    r.report_id = "fleet-" + agent.identity + "-" + std::to_string(turn);
    r.identity = agent.identity;
    r.agent_version = "fleet-sim";
    r.spec_digest = agent.etag.size() > 2 ? agent.etag.substr(1, agent.etag.size() - 2) : "sha256:unknown";
    r.phase = turn == 0 ? nodeform::protocol::Phase::platform_ready : nodeform::protocol::Phase::sustain;
    r.platform_ready = true;
    r.started_at = r.finished_at = nodeform::format_rfc3339(sim.clock.now());
    r.counts.total = r.counts.unchanged = 20;
    return nodeform::protocol::to_json(r).dump();
}

awaitable<void> wait_until(SteadyClock::time_point when) {
    asio::steady_timer timer(co_await asio::this_coro::executor, when);
    co_await timer.async_wait(use_awaitable);
}

awaitable<void> run_agent(Sim& sim, Agent& agent, std::size_t index) {
    co_await wait_until(sim.start + agent.offset);
    // Enroll (retrying every second until the end: a controller may be busy).
    while (agent.credential.empty() && SteadyClock::now() < sim.end) {
        const Endpoint& ep = sim.endpoints[index % sim.endpoints.size()];
        auto began = SteadyClock::now();
        std::string error;
        auto stream = co_await connect(sim, ep, error);
        std::optional<http::response<http::string_body>> response;
        if (stream) {
            auto request = make_request(http::verb::post, "/v1/enroll", ep);
            request.set(http::field::content_type, "application/json");
            request.body() = nlohmann::json{{"identity", agent.identity}, {"token", agent.token}}.dump();
            response = co_await exchange(*stream, request, error);
        }
        if (response && response->result_int() == 200) {
            auto body = nlohmann::json::parse(response->body(), nullptr, false);
            if (body.is_object() && body.contains("credential") && body["credential"].is_string())
                agent.credential = body["credential"].get<std::string>();
        }
        bool good = !agent.credential.empty();
        if (!good && error.empty()) error = "status " + std::to_string(response ? response->result_int() : 0);
        sim.enroll.add(since(began), good, error);
        if (good)
            ++sim.enrolled;
        else
            co_await wait_until(SteadyClock::now() + std::chrono::seconds(1));
    }
    for (std::uint64_t turn = 0; !agent.credential.empty(); ++turn) {
        auto slot = sim.start + agent.offset + sim.interval * static_cast<std::int64_t>(turn);
        if (slot >= sim.end) break;
        co_await wait_until(slot);
        ++sim.turns;
        const Endpoint& ep = sim.endpoints[(index + turn) % sim.endpoints.size()];
        std::string error;
        auto began = SteadyClock::now();
        auto stream = co_await connect(sim, ep, error);
        if (!stream) {
            sim.fetch.add(since(began), false, error);
            continue;
        }
        auto get = make_request(http::verb::get, "/v1/spec/" + agent.identity, ep);
        get.set(http::field::authorization, "Bearer " + agent.credential);
        if (!agent.etag.empty()) get.set(http::field::if_none_match, agent.etag);
        auto fetched = co_await exchange(*stream, get, error);
        int status = fetched ? fetched->result_int() : 0;
        if (status == 200) agent.etag = std::string((*fetched)[http::field::etag]);
        if (status == 304) ++sim.not_modified;
        sim.fetch.add(since(began), status == 200 || status == 304,
                      error.empty() ? "status " + std::to_string(status) : error);
        if (!fetched || !fetched->keep_alive()) {
            std::string again;
            stream = co_await connect(sim, ep, again);
            if (!stream) {
                sim.report.add(0, false, again);
                continue;
            }
        }
        auto post = make_request(http::verb::post, "/v1/nodes/" + agent.identity + "/reports", ep);
        post.set(http::field::authorization, "Bearer " + agent.credential);
        post.set(http::field::content_type, "application/json");
        post.body() = report_body(sim, agent, turn);
        auto began_report = SteadyClock::now();
        error.clear();
        auto posted = co_await exchange(*stream, post, error);
        int report_status = posted ? posted->result_int() : 0;
        sim.report.add(since(began_report), report_status == 200 || report_status == 201,
                       error.empty() ? "status " + std::to_string(report_status) : error);
        beast::error_code ignored;
        beast::get_lowest_layer(*stream).socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    }
}

awaitable<void> progress(Sim& sim, Ms every, std::size_t agents) {
    while (SteadyClock::now() < sim.end) {
        co_await wait_until(SteadyClock::now() + every);
        std::cerr << "fleet-sim: " << static_cast<int>(since(sim.start) / 1000) << " s: " << sim.enrolled << "/"
                  << agents << " enrolled, " << sim.turns << " turns, " << sim.fetch.ok << " fetches ok, "
                  << sim.report.ok << " reports acknowledged\n";
    }
}

std::optional<Endpoint> parse_url(const std::string& url) {
    const std::string scheme = "https://";
    if (url.rfind(scheme, 0) != 0) return std::nullopt;
    std::string rest = url.substr(scheme.size());
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) return std::nullopt;
    return Endpoint{rest.substr(0, colon), rest.substr(colon + 1)};
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    nodeform::ArgSpec spec;
    spec.valued = {"controllers", "ca", "tokens", "interval", "splay", "duration", "progress"};
    spec.flags = {"help"};
    auto parsed = nodeform::parse_args(args, spec);
    if (!parsed || parsed->has("help") || !parsed->positionals.empty()) {
        (parsed && parsed->has("help") ? std::cout : std::cerr) << kUsage;
        return parsed && parsed->has("help") ? 0 : 2;
    }
    for (const char* required : {"controllers", "ca", "tokens"}) {
        if (!parsed->get(required)) {
            std::cerr << "fleet-sim: --" << required << " is required\n" << kUsage;
            return 2;
        }
    }
    auto duration_of = [&](const char* key, const char* fallback) -> std::optional<Ms> {
        auto d = nodeform::parse_duration(parsed->get_or(key, fallback));
        if (!d || d->count() <= 0) {
            std::cerr << "fleet-sim: --" << key << " must be a duration such as 500ms, 60s or 5m\n";
            return std::nullopt;
        }
        return *d;
    };
    auto interval = duration_of("interval", "60s");
    auto duration = duration_of("duration", "300s");
    auto every = duration_of("progress", "10s");
    if (!interval || !duration || !every) return 2;
    auto splay = parsed->get("splay") ? duration_of("splay", "60s") : interval;
    if (!splay) return 2;

    Sim sim;
    sim.interval = *interval;
    sim.splay = *splay;
    std::string list = parsed->get_or("controllers", "");
    for (std::size_t at = 0; at <= list.size();) {
        auto comma = list.find(',', at);
        std::string url = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
        auto ep = parse_url(url);
        if (!ep) {
            std::cerr << "fleet-sim: --controllers: '" << url << "' is not https://HOST:PORT\n";
            return 3;
        }
        sim.endpoints.push_back(*ep);
        if (comma == std::string::npos) break;
        at = comma + 1;
    }
    boost::system::error_code ec;
    sim.tls.set_verify_mode(asio::ssl::verify_peer);
    sim.tls.load_verify_file(parsed->get_or("ca", ""), ec);
    if (ec) {
        std::cerr << "fleet-sim: --ca " << parsed->get_or("ca", "") << ": " << ec.message() << "\n";
        return 3;
    }
    std::ifstream tokens(parsed->get_or("tokens", ""));
    if (!tokens) {
        std::cerr << "fleet-sim: --tokens " << parsed->get_or("tokens", "") << ": cannot read\n";
        return 3;
    }
    std::vector<Agent> agents;
    std::mt19937_64 random(std::random_device{}());
    std::size_t line_no = 0;
    for (std::string line; std::getline(tokens, line);) {
        ++line_no;
        if (line.empty()) continue;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("identity") || !j.contains("token") || !j["identity"].is_string() ||
            !j["token"].is_string()) {
            std::cerr << "fleet-sim: --tokens line " << line_no << ": not {\"identity\":…,\"token\":…}\n";
            return 3;
        }
        Agent a;
        a.identity = j["identity"].get<std::string>();
        a.token = j["token"].get<std::string>();
        a.offset = Ms(static_cast<std::int64_t>(random() % static_cast<std::uint64_t>(sim.splay.count())));
        agents.push_back(std::move(a));
    }
    if (agents.empty()) {
        std::cerr << "fleet-sim: --tokens holds no agent\n";
        return 3;
    }
    sim.start = SteadyClock::now();
    sim.end = sim.start + *duration;
    std::cerr << "fleet-sim: " << agents.size() << " agents against " << sim.endpoints.size()
              << " controller(s), interval " << sim.interval.count() << " ms, splay " << sim.splay.count()
              << " ms, for " << duration->count() << " ms\n";
    for (std::size_t i = 0; i < agents.size(); ++i)
        asio::co_spawn(sim.io, run_agent(sim, agents[i], i), asio::detached);
    asio::co_spawn(sim.io, progress(sim, *every, agents.size()), asio::detached);
    sim.io.run();

    nlohmann::json out = {{"agents", agents.size()},
                          {"controllers", sim.endpoints.size()},
                          {"interval_ms", sim.interval.count()},
                          {"duration_s", since(sim.start) / 1000.0},
                          {"enrolled", sim.enrolled},
                          {"turns", sim.turns},
                          {"not_modified", sim.not_modified},
                          {"enroll", sim.enroll.summary()},
                          {"fetch", sim.fetch.summary()},
                          {"report", sim.report.summary()}};
    std::cout << out.dump(2) << "\n";
    return 0;
}
