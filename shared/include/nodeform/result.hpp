#pragma once
// Result<T>: the return type of every operation that can fail for an expected reason
// (network, parse, I/O). Exceptions are reserved for programming errors.
#include <string>
#include <utility>
#include <variant>

namespace nodeform {

// A failure meant for a person: what went wrong and, where known, what to do next.
struct Error {
    explicit Error(std::string text, std::string error_kind = {})
        : message(std::move(text)), kind(std::move(error_kind)) {}
    std::string message;
    std::string kind;  // a stable class callers may branch on (e.g. kCertificateRefused in http.hpp); "" = none
};

template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : state_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
    Result(Error error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return std::holds_alternative<T>(state_); }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<T>(state_); }
    const T& value() const& { return std::get<T>(state_); }
    T&& value() && { return std::get<T>(std::move(state_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const { return std::get<Error>(state_); }
    const std::string& message() const { return error().message; }

  private:
    std::variant<T, Error> state_;
};

// Result<void>: success carries nothing.
struct Ok {};
using Status = Result<Ok>;

inline Error make_error(std::string message) {
    return Error{std::move(message)};
}
inline Error make_error(std::string message, std::string kind) {
    return Error{std::move(message), std::move(kind)};
}

}  // namespace nodeform
