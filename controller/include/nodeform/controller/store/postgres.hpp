#pragma once
// A thin RAII layer over libpq shared by the PostgreSQL stores (controller store, lifecycle store): connect with
// synchronous_commit=on, parameterized queries only (text format), transactions, and versioned migrations
// serialized across controllers by an advisory lock. Error messages carry PostgreSQL's primary message only
// (never a DETAIL, which may quote values) and never the connection string's password.
#include <libpq-fe.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform::controller::pg {

// True when text names a PostgreSQL server (postgresql://… or postgres://…).
bool is_postgres_url(const std::string& text);
// Err when url is not a postgresql:// URL libpq accepts; Ok(true) when it carries a password.
Result<bool> url_has_password(const std::string& url);
// url without its password, for logs and errors: postgresql://USER@HOST:PORT/DB (socket directories as given).
std::string redact_url(const std::string& url);

// Query parameters in text format; nullopt is SQL NULL.
using Param = std::optional<std::string>;
using Params = std::vector<Param>;
inline Param param(std::int64_t v) {
    return std::to_string(v);
}
inline Param param(const std::string& v) {
    return v;
}

// A query's result rows (PGresult), read as text.
class Rows {
  public:
    Rows() = default;
    explicit Rows(PGresult* r) : r_(r) {}
    Rows(Rows&& other) noexcept : r_(other.r_) { other.r_ = nullptr; }
    Rows& operator=(Rows&& other) noexcept;
    Rows(const Rows&) = delete;
    Rows& operator=(const Rows&) = delete;
    ~Rows();

    int size() const { return r_ != nullptr ? PQntuples(r_) : 0; }
    bool empty() const { return size() == 0; }
    std::int64_t affected() const;  // rows an INSERT/UPDATE/DELETE touched
    std::string command() const;    // the command tag ("COMMIT", or "ROLLBACK" for a COMMIT of a failed transaction)
    std::string text(int row, int column) const;
    std::int64_t integer(int row, int column) const;  // 0 for NULL or not a number
    double real(int row, int column) const;
    bool is_null(int row, int column) const;

  private:
    PGresult* r_ = nullptr;
};

class Connection {
  public:
    Connection() = default;
    Connection(Connection&& other) noexcept
        : conn_(other.conn_), target_(std::move(other.target_)), in_transaction_(other.in_transaction_) {
        other.conn_ = nullptr;
    }
    Connection& operator=(Connection&& other) noexcept;
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

    // One statement with $1… parameters. A broken connection is re-established once before the statement when no
    // transaction is open.
    Result<Rows> query(const std::string& sql, const Params& params = {});
    Status exec(const std::string& sql, const Params& params = {});
    // Several statements without parameters (migrations only).
    Status script(const std::string& sql);
    // SQLSTATE of the last failed statement ("" when none): 40001/40P01 mean "retry the transaction".
    const std::string& last_sqlstate() const { return sqlstate_; }
    bool last_error_is_retryable() const;
    // The server as redact_url shows it.
    const std::string& target() const { return target_; }

    friend Result<Connection> connect(const std::string& url, const std::string& password);
    friend class Transaction;

  private:
    Result<Rows> check(PGresult* r);
    // Re-establishes a broken connection (with its session settings) unless a transaction was open on it.
    void revive();
    Status configure();
    PGconn* conn_ = nullptr;
    std::string target_;
    std::string sqlstate_;
    bool in_transaction_ = false;
};

// Connects to url (postgresql://…; libpq reads PGPASSWORD and ~/.pgpass itself), with password when not empty,
// and sets synchronous_commit=on so a COMMIT has reached the server's WAL on disk before it returns.
Result<Connection> connect(const std::string& url, const std::string& password);

// BEGIN … COMMIT; rolls back in the destructor unless committed.
class Transaction {
  public:
    explicit Transaction(Connection& c) : c_(c) {}
    Status begin();
    Status commit();
    ~Transaction();

  private:
    Connection& c_;
    bool open_ = false;
};

// Runs body in a transaction, again (up to attempts times) when it failed with a serialization failure or a
// deadlock (another controller's transaction touched the same rows in another order).
Status in_transaction(Connection& c, const std::function<Status()>& body, int attempts = 5);

// Applies steps[version-1] for every version above component's current one (table schema_migrations, as in
// SQLite), each in its own transaction with its row, all under pg_advisory_lock so several controllers starting
// at once apply each step once. Refuses a schema newer than steps.
Status apply_migrations(Connection& c, const std::string& component, const std::vector<std::string>& steps);

}  // namespace nodeform::controller::pg
