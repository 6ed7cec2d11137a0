// Package modaltest is a loopback stand-in for Modal's control plane and
// task command router, built on the Modal SDK's own generated modal_proto
// package. Tests point the real SDK at it with MODAL_SERVER_URL.
//
// It is meaningful rather than canned: every Modal sandbox is a directory
// tree on the host whose /workspace (and /tmp, volumes, bucket mounts) are
// bound with bubblewrap, and every exec runs the real command there with
// os/exec, its stdout/stderr/stdin/exit code carried over the command
// router's gRPC protocol. The image itself is not pulled: sandboxes see the
// host's read-only /usr and /etc. Create requests, image builds and execs are
// recorded so tests can assert what the SDK sent, and errors can be injected
// per RPC.
package modaltest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Default credentials the server accepts when Options leaves them empty.
const (
	DefaultTokenID     = "ak-modaltest"
	DefaultTokenSecret = "as-modaltest"
)

// Options configures a Server.
type Options struct {
	// TokenID and TokenSecret are the only credentials accepted
	// (defaults DefaultTokenID / DefaultTokenSecret).
	TokenID, TokenSecret string
	// Dir holds sandboxes, volumes and buckets. Required.
	Dir string
	// Secrets are the named Modal secrets that exist (name -> env).
	Secrets map[string]map[string]string
	// HostBinds are host directories bound read-only into every sandbox,
	// standing in for tools an image would contain (e.g. a CLI).
	HostBinds []Bind
	// Bwrap is the bubblewrap binary (default: looked up in PATH).
	Bwrap string
}

// Server is a running loopback Modal stand-in. Close it when done.
type Server struct {
	pb.UnimplementedModalClientServer
	opts  Options
	lis   net.Listener
	grpc  *grpc.Server
	bwrap string
	rtr   *router

	mu        sync.Mutex
	seq       int
	authToken string
	jwts      map[string]string // jwt -> task id
	apps      map[string]string // name -> app id
	images    map[string]*Image
	imageKeys map[string]string // dockerfile+base key -> image id
	secrets   map[string]map[string]string
	volumes   map[string]*volume // name -> volume
	sandboxes map[string]*sandbox
	tasks     map[string]*sandbox
	creates   []CreateRecord
	execs     []ExecRecord
	failures  map[string][]error
	failBuild string
	closed    bool
	wg        sync.WaitGroup
	closing   chan struct{}
}

// Image is an image the server "built" (ImageGetOrCreate) or snapshotted.
type Image struct {
	ID                 string
	DockerfileCommands []string
	BaseImageID        string
	RegistrySecretID   string
	// SnapshotOf is the sandbox a filesystem snapshot was taken of.
	SnapshotOf string
	// snapshotDir holds the snapshotted /workspace contents.
	snapshotDir string
}

// CreateRecord is what the server received for one SandboxCreate (V1) or
// SandboxCreateV2 call, normalised for assertions.
type CreateRecord struct {
	SandboxID string
	V2        bool
	AppID     string
	ImageID   string
	// ImageChain is the image's Dockerfile commands from the first layer
	// to the last (each layer's "FROM ..." line included).
	ImageChain         [][]string
	RegistrySecretName string
	// RegistryEnv is the env of an unnamed (ephemeral) registry secret.
	RegistryEnv     map[string]string
	Workdir         string
	Env             map[string]string // env and secrets, resolved
	SecretNames     []string          // named secrets attached
	TimeoutSecs     uint32
	IdleTimeoutSecs uint32
	GPU             string // "TYPE" or "TYPE:N", "" for none
	MilliCPU        uint32
	MemoryMB        uint32
	BlockNetwork    bool
	// AllowedDomains is the outbound domain allowlist (recorded only: the
	// server cannot filter by domain, so such sandboxes keep the network).
	AllowedDomains []string
	Volumes        map[string]string // mount path -> volume name
	Buckets        []BucketMount
	Tags           map[string]string
	Raw            *pb.Sandbox
}

// BucketMount is one CloudBucketMount of a create request.
type BucketMount struct {
	Bucket, MountPath, KeyPrefix, SecretName string
	ReadOnly                                 bool
}

// ExecRecord is one TaskExecStart the router received.
type ExecRecord struct {
	SandboxID string
	Argv      []string
	Workdir   string
	Env       map[string]string
}

// Bind is a host directory (Source) visible read-only at Target.
type Bind struct {
	Source, Target string
}

type volume struct {
	id, name, dir string
	created       time.Time
}

// Start starts a Server on a free loopback port.
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("modaltest: Options.Dir is required")
	}
	if opts.TokenID == "" {
		opts.TokenID = DefaultTokenID
	}
	if opts.TokenSecret == "" {
		opts.TokenSecret = DefaultTokenSecret
	}
	bw := opts.Bwrap
	if bw == "" {
		p, err := exec.LookPath("bwrap")
		if err != nil {
			return nil, fmt.Errorf("modaltest: bubblewrap (bwrap) is needed to run sandbox commands: %w", err)
		}
		bw = p
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("modaltest: listen: %w", err)
	}
	s := &Server{
		opts:      opts,
		lis:       lis,
		bwrap:     bw,
		jwts:      map[string]string{},
		apps:      map[string]string{},
		images:    map[string]*Image{},
		imageKeys: map[string]string{},
		secrets:   map[string]map[string]string{},
		volumes:   map[string]*volume{},
		sandboxes: map[string]*sandbox{},
		tasks:     map[string]*sandbox{},
		failures:  map[string][]error{},
		closing:   make(chan struct{}),
	}
	s.rtr = &router{s: s}
	s.authToken = s.newJWT()
	for name, env := range opts.Secrets {
		s.secrets["named:"+name] = env
	}
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.MaxRecvMsgSize(100<<20), grpc.MaxSendMsgSize(100<<20),
	)
	pb.RegisterModalClientServer(s.grpc, s)
	pb.RegisterTaskCommandRouterServer(s.grpc, s.rtr)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.grpc.Serve(lis) // returns when Close stops the server
	}()
	return s, nil
}

// URL is the control-plane address to put in MODAL_SERVER_URL.
func (s *Server) URL() string { return "http://" + s.lis.Addr().String() }

// routerURL is the command-router address handed to the SDK: it insists on
// https, and uses plain gRPC anyway because the server URL is loopback.
func (s *Server) routerURL() string { return "https://" + s.lis.Addr().String() }

// Close stops the server, kills every sandbox process and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.closing)
	sbs := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		sbs = append(sbs, sb)
	}
	s.mu.Unlock()
	for _, sb := range sbs {
		sb.terminate(pb.GenericResult_GENERIC_STATUS_TERMINATED, "server closed")
	}
	s.grpc.Stop()
	s.wg.Wait()
}

// Fail makes the next call of method (e.g. "SandboxCreate", "TaskExecStart",
// "ImageGetOrCreate") fail with a gRPC status of code c and message msg.
// Several calls queue several failures.
func (s *Server) Fail(method string, c codes.Code, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[method] = append(s.failures[method], status.Error(c, msg))
}

// FailNextBuild makes the next image build end in a build failure with
// the given exception text (what Modal reports for a bad image or RUN).
func (s *Server) FailNextBuild(exception string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failBuild = exception
}

// Creates returns the create requests received so far.
func (s *Server) Creates() []CreateRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CreateRecord(nil), s.creates...)
}

// Execs returns the exec requests received so far.
func (s *Server) Execs() []ExecRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ExecRecord(nil), s.execs...)
}

// Image returns the image with the given ID.
func (s *Server) Image(id string) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.images[id]
	if !ok {
		return Image{}, false
	}
	return *im, true
}

// VolumeDir returns the host directory backing the named volume, or "" if
// no such volume exists.
func (s *Server) VolumeDir(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.volumes[name]; ok {
		return v.dir
	}
	return ""
}

// BucketDir returns the host directory standing in for an S3 bucket; tests
// fill it before creating a sandbox that mounts the bucket.
func (s *Server) BucketDir(bucket string) string {
	return filepath.Join(s.opts.Dir, "buckets", bucket)
}

// Running reports whether the Modal sandbox with this ID is running.
func (s *Server) Running(sandboxID string) bool {
	s.mu.Lock()
	sb, ok := s.sandboxes[sandboxID]
	s.mu.Unlock()
	return ok && sb.result() == nil
}

// Stop ends a sandbox as if Modal had stopped it (e.g. it hit its timeout).
func (s *Server) Stop(sandboxID string) {
	s.mu.Lock()
	sb, ok := s.sandboxes[sandboxID]
	s.mu.Unlock()
	if ok {
		sb.terminate(pb.GenericResult_GENERIC_STATUS_TIMEOUT, "stopped by test")
	}
}

// Forget drops a sandbox entirely, as if Modal had garbage-collected it.
func (s *Server) Forget(sandboxID string) {
	s.Stop(sandboxID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb, ok := s.sandboxes[sandboxID]; ok {
		delete(s.tasks, sb.taskID)
		delete(s.sandboxes, sandboxID)
	}
}

func (s *Server) newID(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newIDLocked(prefix)
}

// newIDLocked returns prefix + 22 base-62 characters, the shape of Modal IDs
// (which the SDK inspects to tell V1 sandboxes from V2 ones).
func (s *Server) newIDLocked(prefix string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 22)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	s.seq++
	return prefix + string(b)
}

// newJWT returns an unsigned JWT with an exp claim an hour ahead; the SDK
// parses exp to schedule refreshes and the server only compares strings.
func (s *Server) newJWT() string {
	enc := base64.RawURLEncoding
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	payload, _ := json.Marshal(map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "jti": enc.EncodeToString(nonce)})
	return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + ".c2ln"
}

func (s *Server) takeFailure(fullMethod string) error {
	name := fullMethod[strings.LastIndex(fullMethod, "/")+1:]
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.failures[name]
	if len(q) == 0 {
		return nil
	}
	s.failures[name] = q[1:]
	return q[0]
}

const routerPrefix = "/modal.task_command_router.TaskCommandRouter/"

// authorize checks the credentials each service expects: token id/secret
// (plus the auth token once issued) on the control plane, the JWT handed
// out by *GetCommandRouterAccess on the command router.
func (s *Server) authorize(ctx context.Context, fullMethod string, unary bool) error {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if strings.HasPrefix(fullMethod, routerPrefix) {
		jwt := strings.TrimPrefix(first("authorization"), "Bearer ")
		s.mu.Lock()
		_, ok := s.jwts[jwt]
		s.mu.Unlock()
		if !ok {
			return status.Error(codes.Unauthenticated, "invalid or missing command router token")
		}
		return nil
	}
	if first("x-modal-token-id") != s.opts.TokenID || first("x-modal-token-secret") != s.opts.TokenSecret {
		return status.Error(codes.Unauthenticated, "Token ID or secret is invalid")
	}
	// The SDK attaches the auth token to unary calls only.
	if unary && !strings.HasSuffix(fullMethod, "/AuthTokenGet") && first("x-modal-auth-token") != s.authToken {
		return status.Error(codes.Unauthenticated, "missing or invalid auth token")
	}
	return nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod, true); err != nil {
		return nil, err
	}
	if err := s.takeFailure(info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod, false); err != nil {
		return err
	}
	if err := s.takeFailure(info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

func mkdirs(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}
