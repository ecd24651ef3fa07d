#include "nodeform/controller/store/sqlite.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "nodeform/clock.hpp"

namespace nodeform::controller::sqlite {

std::string database_path(const std::string& state_dir) {
    return state_dir + "/nodeform.db";
}

Statement::Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
    other.stmt_ = nullptr;
}

Statement& Statement::operator=(Statement&& other) noexcept {
    if (this != &other) {
        if (stmt_ != nullptr) sqlite3_finalize(stmt_);
        db_ = other.db_;
        stmt_ = other.stmt_;
        other.stmt_ = nullptr;
    }
    return *this;
}

Statement::~Statement() {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

Statement& Statement::bind(int index, const std::string& value) {
    sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
}

Statement& Statement::bind(int index, double value) {
    sqlite3_bind_double(stmt_, index, value);
    return *this;
}

Statement& Statement::bind_null(int index) {
    sqlite3_bind_null(stmt_, index);
    return *this;
}

Result<bool> Statement::step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return make_error(std::string("database error: ") + sqlite3_errmsg(db_));
}

Status Statement::run() {
    while (true) {
        auto r = step();
        if (!r) return r.error();
        if (!*r) return Ok{};
    }
}

void Statement::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

std::string Statement::text(int column) const {
    const unsigned char* p = sqlite3_column_text(stmt_, column);
    if (p == nullptr) return "";
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::int64_t Statement::integer(int column) const {
    return sqlite3_column_int64(stmt_, column);
}

double Statement::real(int column) const {
    return sqlite3_column_double(stmt_, column);
}

bool Statement::is_null(int column) const {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

Database& Database::operator=(Database&& other) noexcept {
    if (this != &other) {
        if (db_ != nullptr) sqlite3_close_v2(db_);
        db_ = other.db_;
        other.db_ = nullptr;
    }
    return *this;
}

Database::~Database() {
    if (db_ != nullptr) sqlite3_close_v2(db_);
}

Status Database::exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string message = err != nullptr ? err : sqlite3_errmsg(db_);
        sqlite3_free(err);
        return make_error("database error: " + message);
    }
    return Ok{};
}

Result<Statement> Database::prepare(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK)
        return make_error("database error preparing a statement: " + last_error());
    return Statement(db_, stmt);
}

std::string Database::last_error() const {
    return db_ != nullptr ? sqlite3_errmsg(db_) : "no database";
}

Result<Database> open_database(const std::string& path, int busy_timeout_ms) {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) return make_error("cannot create the state directory " + parent.string() + ": " + ec.message());
    // Create the file 0600 ourselves so the database never exists world-readable, even briefly. O_EXCL: never
    // open+close an existing database, since closing any descriptor of it drops every POSIX lock this process
    // holds on it (another connection's): SQLite would then take the WAL for unused and delete it under us.
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    Database db(raw);
    if (rc != SQLITE_OK)
        return make_error("cannot open the database " + path + ": " + (raw ? sqlite3_errmsg(raw) : "out of memory") +
                          " (check that the state directory is writable)");
    sqlite3_busy_timeout(raw, busy_timeout_ms);
    // WAL: readers never block the writer. synchronous=FULL: every COMMIT fsyncs the WAL, so a committed
    // transaction survives power loss (NORMAL would only survive a process crash) — a 2xx means on disk.
    for (const char* pragma :
         {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON", "PRAGMA temp_store=MEMORY"}) {
        if (auto st = db.exec(pragma); !st) return make_error(path + ": " + st.message());
    }
    return db;
}

Status Transaction::begin() {
    if (auto st = db_.exec("BEGIN IMMEDIATE"); !st) return st;
    open_ = true;
    return Ok{};
}

Status Transaction::commit() {
    if (auto st = db_.exec("COMMIT"); !st) return st;
    open_ = false;
    return Ok{};
}

Transaction::~Transaction() {
    if (open_) (void)db_.exec("ROLLBACK");
}

Status apply_migrations(Database& db, const std::string& component, const std::vector<std::string>& steps) {
    if (auto st = db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER "
                          "NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (component, version))");
        !st)
        return st;
    for (std::size_t i = 0; i < steps.size(); ++i) {
        auto version = static_cast<std::int64_t>(i + 1);
        Transaction tx(db);
        if (auto st = tx.begin(); !st) return st;
        auto check = db.prepare("SELECT 1 FROM schema_migrations WHERE component = ?1 AND version = ?2");
        if (!check) return check.error();
        check->bind(1, component).bind(2, version);
        auto exists = check->step();
        if (!exists) return exists.error();
        if (*exists) continue;  // the transaction rolls back (nothing written)
        if (auto st = db.exec(steps[i]); !st)
            return make_error("migration " + component + " v" + std::to_string(version) + " failed: " + st.message());
        auto mark = db.prepare("INSERT INTO schema_migrations (component, version, applied_at) VALUES (?1, ?2, ?3)");
        if (!mark) return mark.error();
        mark->bind(1, component).bind(2, version).bind(3, format_rfc3339(std::chrono::system_clock::now()));
        if (auto st = mark->run(); !st) return st;
        if (auto st = tx.commit(); !st) return st;
    }
    // Refuse a database written by a newer controller: its schema is not ours to guess.
    auto max = db.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?1");
    if (!max) return max.error();
    max->bind(1, component);
    auto row = max->step();
    if (!row) return row.error();
    if (max->integer(0) > static_cast<std::int64_t>(steps.size()))
        return make_error("the database schema of '" + component + "' is version " + std::to_string(max->integer(0)) +
                          ", newer than this controller knows (" + std::to_string(steps.size()) +
                          "); upgrade nodeform-controller");
    return Ok{};
}

}  // namespace nodeform::controller::sqlite
