#include "nodeform/controller/store/postgres.hpp"

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "nodeform/clock.hpp"

namespace nodeform::controller::pg {
namespace {

// The advisory lock key every controller takes around migrations ("nodeform" in ASCII, truncated to 63 bits).
constexpr std::int64_t kMigrationLock = 0x6e6f6465666f726d;

// Every option libpq parsed out of url; nullptr when it is not a connection string libpq accepts.
struct ParsedUrl {
    PQconninfoOption* options = nullptr;
    ~ParsedUrl() {
        if (options != nullptr) PQconninfoFree(options);
    }
    std::string value(const char* key) const {
        for (auto* o = options; o != nullptr && o->keyword != nullptr; ++o)
            if (std::string(o->keyword) == key && o->val != nullptr) return o->val;
        return "";
    }
};

std::string first_line(std::string text) {
    auto nl = text.find('\n');
    if (nl != std::string::npos) text.resize(nl);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\r'))
        text.pop_back();
    return text;
}

}  // namespace

bool is_postgres_url(const std::string& text) {
    return text.rfind("postgresql://", 0) == 0 || text.rfind("postgres://", 0) == 0;
}

Result<bool> url_has_password(const std::string& url) {
    if (!is_postgres_url(url)) return make_error("not a postgresql:// URL");
    char* error = nullptr;
    ParsedUrl parsed{PQconninfoParse(url.c_str(), &error)};
    if (parsed.options == nullptr) {
        // libpq's message quotes no part of the URL beyond the faulty token; drop it anyway (it may be the password).
        if (error != nullptr) PQfreemem(error);
        return make_error("not a connection URL libpq accepts (postgresql://USER@HOST:PORT/DATABASE?OPTION=VALUE)");
    }
    return !parsed.value("password").empty();
}

std::string redact_url(const std::string& url) {
    char* error = nullptr;
    ParsedUrl parsed{PQconninfoParse(url.c_str(), &error)};
    if (error != nullptr) PQfreemem(error);
    if (parsed.options == nullptr) return "postgresql://(unparsable URL)";
    std::string user = parsed.value("user"), host = parsed.value("host"), port = parsed.value("port");
    std::string out = "postgresql://";
    if (!user.empty()) out += user + "@";
    if (!host.empty() && host.front() == '/') {
        out += "/" + parsed.value("dbname") + "?host=" + host;
        if (!port.empty()) out += "&port=" + port;
        return out;
    }
    out += host;
    if (!port.empty()) out += ":" + port;
    return out + "/" + parsed.value("dbname");
}

Rows& Rows::operator=(Rows&& other) noexcept {
    if (this != &other) {
        if (r_ != nullptr) PQclear(r_);
        r_ = other.r_;
        other.r_ = nullptr;
    }
    return *this;
}

Rows::~Rows() {
    if (r_ != nullptr) PQclear(r_);
}

std::int64_t Rows::affected() const {
    const char* n = r_ != nullptr ? PQcmdTuples(r_) : "";
    return n[0] != '\0' ? std::strtoll(n, nullptr, 10) : 0;
}

std::string Rows::text(int row, int column) const {
    if (is_null(row, column)) return "";
    return std::string(PQgetvalue(r_, row, column), static_cast<std::size_t>(PQgetlength(r_, row, column)));
}

std::int64_t Rows::integer(int row, int column) const {
    if (is_null(row, column)) return 0;
    const char* v = PQgetvalue(r_, row, column);
    if (v[0] == 't') return 1;  // a boolean column
    return std::strtoll(v, nullptr, 10);
}

double Rows::real(int row, int column) const {
    return is_null(row, column) ? 0.0 : std::strtod(PQgetvalue(r_, row, column), nullptr);
}

std::string Rows::command() const {
    return r_ != nullptr ? PQcmdStatus(r_) : "";
}

bool Rows::is_null(int row, int column) const {
    return r_ == nullptr || row >= PQntuples(r_) || column >= PQnfields(r_) || PQgetisnull(r_, row, column) != 0;
}

Connection& Connection::operator=(Connection&& other) noexcept {
    if (this != &other) {
        if (conn_ != nullptr) PQfinish(conn_);
        conn_ = other.conn_;
        target_ = std::move(other.target_);
        other.conn_ = nullptr;
    }
    return *this;
}

Connection::~Connection() {
    if (conn_ != nullptr) PQfinish(conn_);
}

bool Connection::last_error_is_retryable() const {
    return sqlstate_ == "40001" || sqlstate_ == "40P01";
}

Result<Rows> Connection::check(PGresult* r) {
    Rows rows(r);
    auto status = r != nullptr ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        sqlstate_.clear();
        return rows;
    }
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    sqlstate_ = state != nullptr ? state : "";
    const char* primary = r != nullptr ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    std::string message = primary != nullptr ? primary : first_line(PQerrorMessage(conn_));
    return make_error("database error (PostgreSQL " + target_ + "): " + message);
}

void Connection::revive() {
    if (PQstatus(conn_) != CONNECTION_BAD || in_transaction_) return;
    PQreset(conn_);
    if (PQstatus(conn_) == CONNECTION_OK) (void)configure();
}

Status Connection::configure() {
    // A 2xx means committed: every COMMIT waits for the server's WAL flush (and standbys, per its own settings).
    auto r = check(PQexec(conn_, "SET synchronous_commit = on"));
    if (!r) return r.error();
    return Ok{};
}

Result<Rows> Connection::query(const std::string& sql, const Params& params) {
    revive();
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params)
        values.push_back(p ? p->c_str() : nullptr);
    PGresult* r =
        PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0);
    return check(r);
}

Status Connection::exec(const std::string& sql, const Params& params) {
    auto r = query(sql, params);
    if (!r) return r.error();
    return Ok{};
}

Status Connection::script(const std::string& sql) {
    revive();
    auto r = check(PQexec(conn_, sql.c_str()));
    if (!r) return r.error();
    return Ok{};
}

Result<Connection> connect(const std::string& url, const std::string& password) {
    auto has_password = url_has_password(url);
    if (!has_password) return make_error("store " + redact_url(url) + ": " + has_password.message());
    // dbname first so that the URL expands into its options; the password given separately overrides none of the
    // URL's other options.
    std::vector<const char*> keys = {"dbname", "fallback_application_name"};
    std::vector<const char*> values = {url.c_str(), "nodeform-controller"};
    if (!password.empty()) {
        keys.push_back("password");
        values.push_back(password.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    Connection c;
    c.target_ = redact_url(url);
    c.conn_ = PQconnectdbParams(keys.data(), values.data(), 1);
    if (c.conn_ == nullptr) return make_error("cannot connect to PostgreSQL " + c.target_ + ": out of memory");
    PQsetNoticeProcessor(
        c.conn_, [](void*, const char*) {}, nullptr);  // NOTICEs are not the operator's business
    if (PQstatus(c.conn_) != CONNECTION_OK)
        return make_error("cannot connect to PostgreSQL " + c.target_ + ": " + first_line(PQerrorMessage(c.conn_)) +
                          " (check the server, the store URL, and the password in store-password-file or PGPASSWORD)");
    if (auto st = c.configure(); !st) return st.error();
    return c;
}

Status Transaction::begin() {
    if (auto st = c_.exec("BEGIN"); !st) return st;
    open_ = true;
    c_.in_transaction_ = true;
    return Ok{};
}

Status Transaction::commit() {
    auto r = c_.query("COMMIT");
    open_ = false;
    c_.in_transaction_ = false;
    if (!r) return r.error();
    if (r->command() != "COMMIT") return make_error("database error (PostgreSQL " + c_.target() + "): rolled back");
    return Ok{};
}

Transaction::~Transaction() {
    if (!open_) return;
    (void)c_.exec("ROLLBACK");
    c_.in_transaction_ = false;
}

Status in_transaction(Connection& c, const std::function<Status()>& body, int attempts) {
    for (int attempt = 1;; ++attempt) {
        Transaction tx(c);
        if (auto st = tx.begin(); !st) return st;
        auto st = body();
        if (st) st = tx.commit();
        if (st || !c.last_error_is_retryable() || attempt >= attempts) return st;
        // The other transaction usually commits within milliseconds; spread the retries a little.
        thread_local std::minstd_rand jitter{std::random_device{}()};
        std::this_thread::sleep_for(std::chrono::milliseconds(attempt * (5 + static_cast<int>(jitter() % 20))));
    }
}

Status apply_migrations(Connection& c, const std::string& component, const std::vector<std::string>& steps) {
    // Session-level lock: held across the per-version transactions below, released on every return.
    if (auto st = c.exec("SELECT pg_advisory_lock($1)", {param(kMigrationLock)}); !st) return st;
    struct Unlock {
        Connection& c;
        ~Unlock() { (void)c.exec("SELECT pg_advisory_unlock($1)", {param(kMigrationLock)}); }
    } unlock{c};
    if (auto st = c.exec("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER "
                         "NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (component, version))");
        !st)
        return st;
    auto current =
        c.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1", {param(component)});
    if (!current) return current.error();
    const auto have = current->integer(0, 0);
    const auto known = static_cast<std::int64_t>(steps.size());
    // Refuse a database written by a newer controller: its schema is not ours to guess.
    if (have > known)
        return make_error("the database schema of '" + component + "' is version " + std::to_string(have) +
                          ", newer than this controller knows (" + std::to_string(known) +
                          "); upgrade nodeform-controller");
    for (auto version = have + 1; version <= known; ++version) {
        Transaction tx(c);
        if (auto st = tx.begin(); !st) return st;
        if (auto st = c.script(steps[static_cast<std::size_t>(version - 1)]); !st)
            return make_error("migration " + component + " v" + std::to_string(version) + " failed: " + st.message());
        if (auto st = c.exec("INSERT INTO schema_migrations (component, version, applied_at) VALUES ($1, $2, $3)",
                             {param(component), param(version), format_rfc3339(std::chrono::system_clock::now())});
            !st)
            return st;
        if (auto st = tx.commit(); !st) return st;
    }
    return Ok{};
}

}  // namespace nodeform::controller::pg
