// SPDX-License-Identifier: MIT
// A small expected-like result for recoverable errors. No exceptions on the
// data path: a result holds either a value or a negative errno.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <utility>
#include <variant>

#include "common/check.hpp"

namespace zc {

// Tag for constructing an error result: `return zc::err(-EINVAL);`.
struct err {
    int code; // negative errno
    explicit constexpr err(int c) noexcept : code(c) {}
};

template <class T>
class [[nodiscard]] result {
public:
    result(T v) noexcept(std::is_nothrow_move_constructible_v<T>) : _v(std::move(v)) {}
    result(err e) noexcept : _v(e) { ZC_CHECK(e.code < 0); }

    bool ok() const noexcept { return _v.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }
    // Negative errno; 0 when ok().
    int error() const noexcept { return ok() ? 0 : std::get<1>(_v).code; }

    T& value() & noexcept { ZC_CHECK(ok()); return std::get<0>(_v); }
    const T& value() const& noexcept { ZC_CHECK(ok()); return std::get<0>(_v); }
    T&& value() && noexcept { ZC_CHECK(ok()); return std::get<0>(std::move(_v)); }
    T* operator->() noexcept { return &value(); }
    const T* operator->() const noexcept { return &value(); }
    T& operator*() & noexcept { return value(); }
    const T& operator*() const& noexcept { return value(); }
    T&& operator*() && noexcept { return std::move(*this).value(); }

private:
    std::variant<T, err> _v;
};

} // namespace zc
