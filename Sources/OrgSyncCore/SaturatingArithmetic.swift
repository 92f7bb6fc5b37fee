/// Link-clock arithmetic on configured durations. A deadline past `UInt64.max` means "never"
/// rather than a trap: a configuration near 2^64 ms must not crash the broker at its first
/// failure (configuration validation bounds the fields too; this is the second line).
extension UInt64 {
    /// `self + other`, or `UInt64.max` when the sum does not fit.
    package func saturatingAdd(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }

    /// `self × other`, or `UInt64.max` when the product does not fit.
    package func saturatingMultiply(_ other: UInt64) -> UInt64 {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? .max : product
    }

    /// A non-negative `Double` of milliseconds rounded to the nearest `UInt64`, clamped to
    /// `0...UInt64.max` (NaN gives `nil`): `UInt64(_:)` traps on a value past the range, and
    /// `Double(UInt64.max)` itself rounds up past it.
    init?(saturatingRounded value: Double) {
        guard !value.isNaN else { return nil }
        let rounded = value.rounded()
        if rounded <= 0 {
            self = 0
        } else if rounded >= 0x1p64 {
            self = .max
        } else {
            self = UInt64(rounded)
        }
    }
}
