// Package repotest has the git servers the repositories tests run
// against: an SSH server (golang.org/x/crypto/ssh) that runs git's own
// upload-pack and receive-pack.
package repotest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// SSHGitServer serves the repositories under Root over SSH for one client
// key, running git-upload-pack and git-receive-pack with the GIT_PROTOCOL
// the client sends (as GitHub does).
type SSHGitServer struct {
	Addr, Root string
	HostKey    ssh.PublicKey
	mu         sync.Mutex
	commands   []string // each exec'd command and its GIT_PROTOCOL
	conns      int      // connections that authenticated
	open       map[net.Conn]bool
}

// NewKey returns a new ed25519 key in OpenSSH PEM form and its signer.
func NewKey(t testing.TB) (string, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "techboss test")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block)), signer
}

// NewSSHGitServer starts the server on loopback; it stops with the test.
func NewSSHGitServer(t testing.TB, root string, client ssh.PublicKey) *SSHGitServer {
	t.Helper()
	_, hostSigner := NewKey(t)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) != string(client.Marshal()) {
			return nil, fmt.Errorf("unknown key")
		}
		return nil, nil
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &SSHGitServer{Addr: ln.Addr().String(), Root: root, HostKey: hostSigner.PublicKey()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, cfg)
		}
	}()
	return s
}

// Port is the server's port.
func (s *SSHGitServer) Port() string {
	_, port, _ := net.SplitHostPort(s.Addr)
	return port
}

// KnownHosts is the server's known_hosts line.
func (s *SSHGitServer) KnownHosts() string {
	return fmt.Sprintf("[127.0.0.1]:%s %s", s.Port(), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey))))
}

// Conns returns how many connections authenticated so far.
func (s *SSHGitServer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Drop closes every open connection (what a host's restart or idle
// timeout does to its clients).
func (s *SSHGitServer) Drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		c.Close()
	}
}

// Commands returns each command run so far, with its GIT_PROTOCOL.
func (s *SSHGitServer) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

func (s *SSHGitServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.conns++
	if s.open == nil {
		s.open = map[net.Conn]bool{}
	}
	s.open[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
	}()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go s.session(ch, creqs)
	}
}

func (s *SSHGitServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	proto := ""
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			ssh.Unmarshal(req.Payload, &kv)
			if kv.Name == "GIT_PROTOCOL" {
				proto = kv.Value
			}
			req.Reply(true, nil)
		case "exec":
			var cmd struct{ Command string }
			ssh.Unmarshal(req.Payload, &cmd)
			svc, arg, _ := strings.Cut(cmd.Command, " ")
			path := strings.Trim(arg, "'")
			if (svc != "git-upload-pack" && svc != "git-receive-pack") || strings.Contains(path, "..") {
				req.Reply(false, nil)
				return
			}
			req.Reply(true, nil)
			s.mu.Lock()
			s.commands = append(s.commands, cmd.Command+" "+proto)
			s.mu.Unlock()
			x := exec.Command(svc, filepath.Join(s.Root, strings.TrimPrefix(path, "/")))
			x.Env = append(os.Environ(), "GIT_PROTOCOL="+proto)
			x.Stdin, x.Stdout, x.Stderr = ch, ch, ch.Stderr()
			code := 0
			if err := x.Run(); err != nil {
				code = 1
			}
			status := make([]byte, 4)
			binary.BigEndian.PutUint32(status, uint32(code))
			ch.SendRequest("exit-status", false, status)
			return
		default:
			req.Reply(false, nil)
		}
	}
}
