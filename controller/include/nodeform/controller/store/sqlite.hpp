#pragma once
// A thin RAII layer over sqlite3 shared by every table owner in STATE/nodeform.db: open with the
// controller's pragmas (WAL, synchronous=FULL, busy_timeout), prepared statements, transactions and
// per-component versioned migrations (table schema_migrations(component, version, applied_at)).
#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nodeform/result.hpp"

namespace nodeform::controller::sqlite {

// STATE/nodeform.db: the one database file of the controller.
std::string database_path(const std::string& state_dir);

class Statement {
  public:
    Statement() = default;
    Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
    Statement(Statement&& other) noexcept;
    Statement& operator=(Statement&& other) noexcept;
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement();

    Statement& bind(int index, const std::string& value);
    Statement& bind(int index, std::int64_t value);
    Statement& bind(int index, double value);
    Statement& bind_null(int index);
    // SQLITE_ROW → true, SQLITE_DONE → false, anything else → Err.
    Result<bool> step();
    Status run();  // step until done
    void reset();

    std::string text(int column) const;
    std::int64_t integer(int column) const;
    double real(int column) const;
    bool is_null(int column) const;

  private:
    sqlite3* db_ = nullptr;
    sqlite3_stmt* stmt_ = nullptr;
};

class Database {
  public:
    Database() = default;
    explicit Database(sqlite3* db) : db_(db) {}
    Database(Database&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
    Database& operator=(Database&& other) noexcept;
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database();

    sqlite3* handle() const { return db_; }
    Status exec(const std::string& sql);
    Result<Statement> prepare(const std::string& sql);
    std::string last_error() const;
    std::int64_t changes() const { return sqlite3_changes64(db_); }

  private:
    sqlite3* db_ = nullptr;
};

// Opens (creating parents and the file 0600) with journal_mode=WAL, synchronous=FULL, foreign_keys=ON,
// busy_timeout. Several connections to the same file are fine (each caller may open its own).
Result<Database> open_database(const std::string& path, int busy_timeout_ms = 5000);

// Applies steps[version-1] for every version above the component's current one, each in its own
// IMMEDIATE transaction together with its schema_migrations row. Idempotent; safe across processes.
Status apply_migrations(Database& db, const std::string& component, const std::vector<std::string>& steps);

// BEGIN IMMEDIATE … COMMIT; rolls back in the destructor unless committed.
class Transaction {
  public:
    explicit Transaction(Database& db) : db_(db) {}
    Status begin();
    Status commit();
    ~Transaction();

  private:
    Database& db_;
    bool open_ = false;
};

}  // namespace nodeform::controller::sqlite
