/// Which live member runs a link: rendezvous (highest-random-weight) hashing. Every member
/// computes the same answer from the same member list, with no coordination; when a member
/// joins or leaves, only the links it wins or held move (about 1/n of them), the rest stay put.
///
/// The weight is a stable 64-bit hash of (member, link) — FNV-1a over the two names with a
/// separator, then the SplitMix64 finalizer to spread FNV's low bits — never Swift's `Hasher`,
/// which is seeded per process and would give every member another answer.
public enum RendezvousPlacement {
    /// The member that runs `link`: the one with the highest weight (ties, which need a 64-bit
    /// collision, go to the greater name). Nil when there are no members.
    public static func owner(of link: String, among members: some Sequence<String>) -> String? {
        var best: (weight: UInt64, member: String)?
        for member in members {
            let candidate = (weight: weight(member: member, link: link), member: member)
            if let current = best, (current.weight, current.member) >= (candidate.weight, candidate.member) { continue }
            best = candidate
        }
        return best?.member
    }

    /// The stable weight of `member` for `link`.
    public static func weight(member: String, link: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a offset basis
        func mix(_ byte: UInt8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3  // FNV-1a prime; wrapping by definition
        }
        for byte in member.utf8 { mix(byte) }
        mix(0xFF)  // never in UTF-8: ("ab", "c") and ("a", "bc") differ
        for byte in link.utf8 { mix(byte) }
        // SplitMix64's finalizer (wrapping multiplications by definition).
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        return hash ^ (hash >> 31)
    }
}
