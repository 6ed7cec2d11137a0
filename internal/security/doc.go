// Package security holds the attack tests of the sandbox boundary: each test
// does what an agent inside a local sandbox could do to reach the host, the
// server or other users — symlink swaps racing the server's snapshot,
// restore, import and archive code, nested namespaces, mounts, filling the
// disk past its limit, reaching host loopback or the metadata address over
// the network, fork bombs and memory hogs — and checks that the boundary
// holds. They run the real local driver (bubblewrap, user namespaces,
// seccomp, cgroups), the real snapshot code and real stores, as root, in
// `make test`. docs/security.md is the threat model they check.
package security
