package modaltest

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// router implements the TaskCommandRouter service on the same listener.
type router struct {
	pb.UnimplementedTaskCommandRouterServer
	s *Server
}

func (r *router) task(id string) (*sandbox, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	sb, ok := r.s.tasks[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "task %s not found", id)
	}
	return sb, nil
}

func (r *router) exec(taskID, execID string) (*execProc, error) {
	sb, err := r.task(taskID)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	p, ok := sb.execs[execID]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "exec %s not found", execID)
	}
	return p, nil
}

// TaskExecStart starts a command in the task's sandbox.
func (r *router) TaskExecStart(ctx context.Context, req *pb.TaskExecStartRequest) (*pb.TaskExecStartResponse, error) {
	sb, err := r.task(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	if len(req.GetCommandArgs()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty command")
	}
	env := maps.Clone(req.GetEnv())
	if env == nil {
		env = map[string]string{}
	}
	r.s.mu.Lock()
	for _, id := range req.GetSecretIds() {
		e, _, ok := r.s.secretEnvLocked(id)
		if !ok {
			r.s.mu.Unlock()
			return nil, status.Errorf(codes.NotFound, "Secret %s not found", id)
		}
		maps.Copy(env, e)
	}
	for _, src := range req.GetSecretSources() {
		if src.WhichSource() == pb.SecretSource_SecretId_case {
			e, _, ok := r.s.secretEnvLocked(src.GetSecretId())
			if !ok {
				r.s.mu.Unlock()
				return nil, status.Errorf(codes.NotFound, "Secret %s not found", src.GetSecretId())
			}
			maps.Copy(env, e)
			continue
		}
		maps.Copy(env, src.GetEnv().GetContents())
	}
	r.s.execs = append(r.s.execs, ExecRecord{SandboxID: sb.id, Argv: req.GetCommandArgs(), Workdir: req.GetWorkdir(), Env: maps.Clone(env)})
	r.s.mu.Unlock()

	sb.mu.Lock()
	_, dup := sb.execs[req.GetExecId()]
	sb.mu.Unlock()
	if dup {
		return pb.TaskExecStartResponse_builder{}.Build(), nil // a retried start
	}
	_, err = sb.startExec(req.GetExecId(), req.GetCommandArgs(), req.GetWorkdir(), env,
		req.GetStdoutConfig() == pb.TaskExecStdoutConfig_TASK_EXEC_STDOUT_CONFIG_PIPE,
		req.GetStderrConfig() == pb.TaskExecStderrConfig_TASK_EXEC_STDERR_CONFIG_PIPE)
	if errors.Is(err, errSandboxFinished) {
		return nil, status.Errorf(codes.NotFound, "task %s has finished", req.GetTaskId())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "start exec: %v", err)
	}
	if t := req.GetTimeoutSecs(); t > 0 {
		p, _ := r.exec(req.GetTaskId(), req.GetExecId())
		tm := time.AfterFunc(time.Duration(t)*time.Second, p.kill)
		r.s.wg.Add(1)
		go func() { defer r.s.wg.Done(); <-p.done; tm.Stop() }()
	}
	return pb.TaskExecStartResponse_builder{}.Build(), nil
}

// TaskExecStdioRead streams an exec's stdout or stderr from an offset until
// the stream ends.
func (r *router) TaskExecStdioRead(req *pb.TaskExecStdioReadRequest, stream grpc.ServerStreamingServer[pb.TaskExecStdioReadResponse]) error {
	p, err := r.exec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return err
	}
	st := p.out[0]
	if req.GetFileDescriptor() == pb.TaskExecStdioFileDescriptor_TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR {
		st = p.out[1]
	}
	off := req.GetOffset()
	for {
		data, closed, changed := st.from(off)
		for len(data) > 0 {
			n := min(len(data), 64<<10)
			if err := stream.Send(pb.TaskExecStdioReadResponse_builder{Data: data[:n]}.Build()); err != nil {
				return err
			}
			data = data[n:]
			off += uint64(n)
		}
		if closed {
			if d, _, _ := st.from(off); len(d) == 0 {
				return nil
			}
			continue
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-r.s.closing:
			return status.Error(codes.Unavailable, "server closing")
		}
	}
}

func exitResponse(p *execProc) *pb.TaskExecWaitResponse {
	if p.signal != nil {
		return pb.TaskExecWaitResponse_builder{Signal: p.signal}.Build()
	}
	return pb.TaskExecWaitResponse_builder{Code: p.code}.Build()
}

// TaskExecWait blocks until the exec exits.
func (r *router) TaskExecWait(ctx context.Context, req *pb.TaskExecWaitRequest) (*pb.TaskExecWaitResponse, error) {
	p, err := r.exec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
		return exitResponse(p), nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-r.s.closing:
		return nil, status.Error(codes.Unavailable, "server closing")
	}
}

// TaskExecPoll reports the exit status if the exec has finished.
func (r *router) TaskExecPoll(ctx context.Context, req *pb.TaskExecPollRequest) (*pb.TaskExecPollResponse, error) {
	p, err := r.exec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
		if p.signal != nil {
			return pb.TaskExecPollResponse_builder{Signal: p.signal}.Build(), nil
		}
		return pb.TaskExecPollResponse_builder{Code: p.code}.Build(), nil
	default:
		return pb.TaskExecPollResponse_builder{}.Build(), nil
	}
}

// TaskExecStdinWrite writes to an exec's stdin at an offset.
func (r *router) TaskExecStdinWrite(ctx context.Context, req *pb.TaskExecStdinWriteRequest) (*pb.TaskExecStdinWriteResponse, error) {
	p, err := r.exec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := p.writeStdin(req.GetOffset(), req.GetData(), req.GetEof()); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return pb.TaskExecStdinWriteResponse_builder{}.Build(), nil
}

// TaskExecStdinStatus reports how much stdin was written and whether it is closed.
func (r *router) TaskExecStdinStatus(ctx context.Context, req *pb.TaskExecStdinStatusRequest) (*pb.TaskExecStdinStatusResponse, error) {
	p, err := r.exec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	return pb.TaskExecStdinStatusResponse_builder{NumBytesWritten: p.stdinOffset, Closed: p.stdinClosed}.Build(), nil
}

// TaskExecStdinWriteStream streams stdin: Start, Data..., End.
func (r *router) TaskExecStdinWriteStream(stream grpc.ClientStreamingServer[pb.TaskExecStdinWriteStreamRequest, pb.TaskExecStdinWriteStreamResponse]) error {
	var p *execProc
	var off uint64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(pb.TaskExecStdinWriteStreamResponse_builder{}.Build())
		}
		if err != nil {
			return err
		}
		switch {
		case msg.HasStart():
			st := msg.GetStart()
			if p, err = r.exec(st.GetTaskId(), st.GetExecId()); err != nil {
				return err
			}
			off = st.GetOffset()
		case p == nil:
			return status.Error(codes.InvalidArgument, "stdin stream must begin with start")
		case msg.HasEnd():
			if err := p.writeStdin(off, nil, true); err != nil {
				return status.Error(codes.FailedPrecondition, err.Error())
			}
		default:
			if err := p.writeStdin(off, msg.GetData(), false); err != nil {
				return status.Error(codes.FailedPrecondition, err.Error())
			}
			off += uint64(len(msg.GetData()))
		}
	}
}

// TaskSnapshotFilesystem snapshots the sandbox: here, its /workspace tree
// becomes a new image that later sandboxes start from.
func (r *router) TaskSnapshotFilesystem(ctx context.Context, req *pb.TaskSnapshotFilesystemRequest) (*pb.TaskSnapshotFilesystemResponse, error) {
	sb, err := r.task(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	if sb.result() != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "task %s has finished", req.GetTaskId())
	}
	b, _, _ := sb.resolve("/workspace")
	id := r.s.newID("im-")
	dir := filepath.Join(r.s.opts.Dir, "snapshots", id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := copyTree(b.host, dir); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	r.s.mu.Lock()
	r.s.images[id] = &Image{ID: id, SnapshotOf: sb.id, snapshotDir: dir}
	r.s.mu.Unlock()
	return pb.TaskSnapshotFilesystemResponse_builder{ImageId: id}.Build(), nil
}
