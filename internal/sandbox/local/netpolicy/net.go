package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
)

// Options configure a sandbox's network.
type Options struct {
	// NetNS is the sandbox's network namespace, e.g. /proc/<init pid>/ns/net
	// (bwrap --unshare-net), or /proc/self/fd/<n> for a handle the caller
	// holds. Nothing may run in it yet when Start is called.
	NetNS string
	// UserNS, when set, is the user namespace that owns NetNS (the
	// sandbox's, e.g. /proc/<init pid>/ns/user). pasta then joins it and
	// holds no capability in the host's user namespace; without it pasta
	// keeps CAP_SYS_ADMIN there (see startPasta).
	UserNS string
	// Policy is what the sandbox may reach.
	Policy Policy
	// StateDir holds pasta's pid and log files (the sandbox's state
	// directory; not visible to the sandbox).
	StateDir string
	// Logger; nil discards.
	Logger *slog.Logger
	// Pasta is the pasta binary; empty looks it up in PATH.
	Pasta string
	// Upstreams are the DNS servers ("host:port") the proxy forwards to;
	// empty takes the host's /etc/resolv.conf.
	Upstreams []string

	// pastaSafety replaces pastaSafety; tests use it to show what each
	// flag prevents.
	pastaSafety []string
}

// State is what the driver persists to re-adopt a sandbox's network after a
// server restart (Attach) and to stop it without a Net (Stop).
type State struct {
	PastaPID   int    `json:"pasta_pid"`
	PastaStart uint64 `json:"pasta_start"` // clock ticks since boot, /proc/<pid>/stat field 22
}

// Net is a running sandbox network: pasta, the rules in the namespace and
// the DNS proxy.
type Net struct {
	log   *slog.Logger
	nsf   *os.File
	usf   *os.File // nil without Options.UserNS
	conn  *nftables.Conn
	fw    *firewall
	proxy *proxy

	mu     sync.Mutex
	state  State
	closed bool
}

// Start gives the namespace o.NetNS outbound networking under o.Policy. The
// rules are in place before pasta brings the interface up, so there is no
// moment without them. On error nothing keeps running.
func Start(ctx context.Context, o Options) (*Net, error) {
	n, err := open(&o)
	if err != nil {
		return nil, err
	}
	hosts, err := hostAddrs()
	if err == nil {
		err = install(n.conn, o.Policy, hosts)
	}
	if err == nil {
		n.state, err = startPasta(ctx, o.Pasta, o.StateDir, n.nsf, n.usf, o.pastaSafety)
	}
	if err == nil {
		err = n.startProxy(o)
	}
	if err != nil {
		_ = stopPasta(n.state, time.Second)
		n.closeFiles()
		return nil, err
	}
	return n, nil
}

// Attach re-adopts the network of a sandbox started by an earlier server
// process: it checks that the rules are in place (reinstalling them if
// not), refreshes the host's addresses in them, restarts pasta if the
// process st names is gone, and serves DNS again. Persist State() after it:
// pasta's pid changes when it is restarted.
func Attach(ctx context.Context, o Options, st State) (*Net, error) {
	n, err := open(&o)
	if err != nil {
		return nil, err
	}
	n.state = st
	hosts, err := hostAddrs()
	if err == nil {
		if _, terr := n.conn.ListTableOfFamily(tableName, nftables.TableFamilyINet); terr != nil {
			n.log.Warn("sandbox network rules missing; reinstalling", "err", terr)
			err = install(n.conn, o.Policy, hosts)
		} else {
			err = refreshHostAddrs(n.conn, hosts)
			if err == nil {
				err = n.fw.load(o.Policy)
			}
		}
	}
	restarted := false
	if err == nil && !pastaAlive(st) {
		n.log.Warn("pasta gone; restarting it", "pid", st.PastaPID)
		n.state, err = startPasta(ctx, o.Pasta, o.StateDir, n.nsf, n.usf, o.pastaSafety)
		restarted = err == nil
	}
	if err == nil {
		err = n.startProxy(o)
	}
	if err != nil {
		if restarted {
			_ = stopPasta(n.state, time.Second)
		}
		n.closeFiles()
		return nil, err
	}
	return n, nil
}

func open(o *Options) (*Net, error) {
	if o.NetNS == "" || o.StateDir == "" {
		return nil, errors.New("netpolicy: NetNS and StateDir are required")
	}
	for _, r := range o.Policy.Operator {
		if r.Host != "" {
			return nil, errors.New("netpolicy: operator rules take prefixes, not host names")
		}
	}
	if o.pastaSafety == nil {
		o.pastaSafety = pastaSafety
	}
	if o.Pasta == "" {
		p, err := exec.LookPath("pasta")
		if err != nil {
			return nil, fmt.Errorf("netpolicy: %w", err)
		}
		o.Pasta = p
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nsf, err := nsFile(o.NetNS)
	if err != nil {
		return nil, err
	}
	// The handle must not be the server's own namespace: the rules would
	// cut the host off.
	if same, err := sameNetNS(nsf); err != nil || same {
		nsf.Close()
		if err == nil {
			err = errors.New("it is the server's own network namespace")
		}
		return nil, fmt.Errorf("netpolicy: %s: %w", o.NetNS, err)
	}
	var usf *os.File
	if o.UserNS != "" {
		if usf, err = nsFile(o.UserNS); err != nil {
			nsf.Close()
			return nil, err
		}
	}
	conn, err := openConn(int(nsf.Fd()))
	if err != nil {
		nsf.Close()
		if usf != nil {
			usf.Close()
		}
		return nil, err
	}
	return &Net{log: log, nsf: nsf, usf: usf, conn: conn, fw: newFirewall(conn)}, nil
}

func (n *Net) closeFiles() error {
	if n.usf != nil {
		n.usf.Close()
	}
	return n.nsf.Close()
}

func (n *Net) startProxy(o Options) error {
	ups := o.Upstreams
	if len(ups) == 0 {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return fmt.Errorf("host resolvers: %w", err)
		}
		for _, s := range cfg.Servers {
			ups = append(ups, net.JoinHostPort(s, cfg.Port))
		}
	}
	px, err := startProxy(int(n.nsf.Fd()), n.fw, o.Policy, ups, n.log)
	if err != nil {
		return err
	}
	n.proxy = px
	return nil
}

// State returns what to persist for Attach and Stop.
func (n *Net) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// RefreshHostAddrs re-reads the host's interface addresses into the rules;
// call it when the host's addresses change.
func (n *Net) RefreshHostAddrs() error {
	hosts, err := hostAddrs()
	if err != nil {
		return err
	}
	return n.fw.refreshHostAddrs(hosts)
}

// Close detaches from the sandbox's network, as on server shutdown: the
// DNS proxy stops (lookups in the sandbox fail until Attach), while pasta
// and the rules stay, so connections keep working.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.proxy.close()
	return n.closeFiles()
}

// Destroy closes n and stops pasta, for a sandbox being destroyed.
func (n *Net) Destroy() error {
	err := n.Close()
	return errors.Join(err, Stop(n.State()))
}

// Stop ends the pasta process st names, if it still runs. The rules and
// the namespace go away with the sandbox's last process.
func Stop(st State) error {
	return stopPasta(st, 2*time.Second)
}

func sameNetNS(nsf *os.File) (bool, error) {
	a, err := nsf.Stat()
	if err != nil {
		return false, err
	}
	if serverNetNSErr != nil {
		return false, serverNetNSErr
	}
	return os.SameFile(a, serverNetNS), nil
}

// serverNetNS is the server's own network namespace, taken while the
// package initialises. Later, /proc/self/ns/net is the main thread's: a
// goroutine that locked its thread and entered a sandbox's namespace
// (loopbackUp, Listen, DialPort) may have run on the main thread, which
// the runtime wedges instead of ending when the goroutine exits, so it
// can be left in that sandbox's namespace.
var serverNetNS, serverNetNSErr = os.Stat("/proc/self/ns/net")

// NetNSPath is the namespace of a process, for Options.NetNS.
func NetNSPath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/ns/net" }
