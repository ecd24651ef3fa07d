#pragma once
// Include before any valijson header. valijson's multipleOf check calls remainder(), the programs' only use of
// libm: this definition, found first by the check's unqualified lookup inside namespace valijson, keeps libm
// and its ~0.3 MiB of resident pages out of the agent (docs/benchmarks.md, agent/cmake/check_needed.cmake).
namespace valijson {

// x - y·n with n the integer nearest x/y, ties to even (IEEE 754 remainder), precise enough for valijson's
// comparison against epsilon; NaN stays NaN.
inline double remainder(double x, double y) {
    const double q = x / y;
    if (q != q) return q;
    if (!(q > -4503599627370496.0 && q < 4503599627370496.0)) return 0.0;  // |x/y| >= 2^52: already integral
    long long n = static_cast<long long>(q);                               // toward zero
    const double fraction = q - static_cast<double>(n);
    if (fraction > 0.5 || (fraction == 0.5 && (n & 1)))
        ++n;
    else if (fraction < -0.5 || (fraction == -0.5 && (n & 1)))
        --n;
    return x - y * static_cast<double>(n);
}

}  // namespace valijson
