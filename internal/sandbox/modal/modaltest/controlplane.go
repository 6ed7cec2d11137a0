package modaltest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	pb "github.com/modal-labs/modal-client/go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// AuthTokenGet issues the auth token the SDK attaches to later calls.
func (s *Server) AuthTokenGet(ctx context.Context, _ *pb.AuthTokenGetRequest) (*pb.AuthTokenGetResponse, error) {
	return pb.AuthTokenGetResponse_builder{Token: s.authToken}.Build(), nil
}

// AppGetOrCreate returns (creating if asked) an app by name.
func (s *Server) AppGetOrCreate(ctx context.Context, req *pb.AppGetOrCreateRequest) (*pb.AppGetOrCreateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := req.GetEnvironmentName() + "/" + req.GetAppName()
	id, ok := s.apps[key]
	if !ok {
		if req.GetObjectCreationType() != pb.ObjectCreationType_OBJECT_CREATION_TYPE_CREATE_IF_MISSING {
			return nil, status.Errorf(codes.NotFound, "App '%s' not found", req.GetAppName())
		}
		id = s.newIDLocked("ap-")
		s.apps[key] = id
	}
	return pb.AppGetOrCreateResponse_builder{AppId: id}.Build(), nil
}

// EnvironmentGetOrCreate reports the environment's image builder version.
func (s *Server) EnvironmentGetOrCreate(ctx context.Context, req *pb.EnvironmentGetOrCreateRequest) (*pb.EnvironmentGetOrCreateResponse, error) {
	name := req.GetDeploymentName()
	if name == "" {
		name = "main"
	}
	return pb.EnvironmentGetOrCreateResponse_builder{
		EnvironmentId: "en-" + name,
		Metadata: pb.EnvironmentMetadata_builder{
			Name:     name,
			Settings: pb.EnvironmentSettings_builder{ImageBuilderVersion: "2025.06"}.Build(),
		}.Build(),
	}.Build(), nil
}

// SecretGetOrCreate looks up a named secret or stores an ephemeral env dict.
func (s *Server) SecretGetOrCreate(ctx context.Context, req *pb.SecretGetOrCreateRequest) (*pb.SecretGetOrCreateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name := req.GetDeploymentName(); name != "" {
		env, ok := s.secrets["named:"+name]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "Secret '%s' not found", name)
		}
		for _, k := range req.GetRequiredKeys() {
			if _, ok := env[k]; !ok {
				return nil, status.Errorf(codes.NotFound, "Secret '%s' is missing key %s", name, k)
			}
		}
		return pb.SecretGetOrCreateResponse_builder{SecretId: "st-named-" + name}.Build(), nil
	}
	id := s.newIDLocked("st-")
	s.secrets[id] = maps.Clone(req.GetEnvDict())
	return pb.SecretGetOrCreateResponse_builder{SecretId: id}.Build(), nil
}

// secretEnvLocked resolves a secret ID to its env.
func (s *Server) secretEnvLocked(id string) (map[string]string, string, bool) {
	if name, ok := strings.CutPrefix(id, "st-named-"); ok {
		env, ok := s.secrets["named:"+name]
		return env, name, ok
	}
	env, ok := s.secrets[id]
	return env, "", ok
}

// VolumeGetOrCreate returns (creating if asked) a named volume.
func (s *Server) VolumeGetOrCreate(ctx context.Context, req *pb.VolumeGetOrCreateRequest) (*pb.VolumeGetOrCreateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.GetDeploymentName()
	v, ok := s.volumes[name]
	if !ok {
		if req.GetObjectCreationType() != pb.ObjectCreationType_OBJECT_CREATION_TYPE_CREATE_IF_MISSING {
			return nil, status.Errorf(codes.NotFound, "Volume '%s' not found", name)
		}
		id := s.newIDLocked("vo-")
		dir := filepath.Join(s.opts.Dir, "volumes", id)
		if err := mkdirs(dir); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		v = &volume{id: id, name: name, dir: dir, created: time.Now()}
		s.volumes[name] = v
	}
	return pb.VolumeGetOrCreateResponse_builder{VolumeId: v.id, Version: pb.VolumeFsVersion_VOLUME_FS_VERSION_V2}.Build(), nil
}

// VolumeDelete deletes a volume and its data.
func (s *Server) VolumeDelete(ctx context.Context, req *pb.VolumeDeleteRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.volumeByIDLocked(req.GetVolumeId())
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "Volume %s not found", req.GetVolumeId())
	}
	delete(s.volumes, v.name)
	if err := os.RemoveAll(v.dir); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &emptypb.Empty{}, nil
}

func (s *Server) volumeByIDLocked(id string) *volume {
	for _, v := range s.volumes {
		if v.id == id {
			return v
		}
	}
	return nil
}

// ImageGetOrCreate records one image layer; a layer with the same commands
// and base is reused, as Modal's image cache does.
func (s *Server) ImageGetOrCreate(ctx context.Context, req *pb.ImageGetOrCreateRequest) (*pb.ImageGetOrCreateResponse, error) {
	im := req.GetImage()
	base := ""
	for _, b := range im.GetBaseImages() {
		base = b.GetImageId()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if base != "" {
		if _, ok := s.images[base]; !ok {
			return nil, status.Errorf(codes.NotFound, "base image %s not found", base)
		}
	}
	regSecret := im.GetImageRegistryConfig().GetSecretId()
	if regSecret != "" {
		if _, _, ok := s.secretEnvLocked(regSecret); !ok {
			return nil, status.Errorf(codes.NotFound, "registry secret %s not found", regSecret)
		}
	}
	key := base + "\x00" + regSecret + "\x00" + strings.Join(im.GetDockerfileCommands(), "\n")
	if s.failBuild != "" {
		msg := s.failBuild
		s.failBuild = ""
		id := s.newIDLocked("im-")
		s.images[id] = &Image{ID: id, DockerfileCommands: im.GetDockerfileCommands(), BaseImageID: base}
		return pb.ImageGetOrCreateResponse_builder{ImageId: id, Result: pb.GenericResult_builder{
			Status: pb.GenericResult_GENERIC_STATUS_FAILURE, Exception: msg}.Build()}.Build(), nil
	}
	id, ok := s.imageKeys[key]
	if !ok {
		id = s.newIDLocked("im-")
		s.images[id] = &Image{ID: id, DockerfileCommands: im.GetDockerfileCommands(), BaseImageID: base, RegistrySecretID: regSecret}
		s.imageKeys[key] = id
		// A fresh build has no result yet: the SDK then joins the build stream.
		return pb.ImageGetOrCreateResponse_builder{ImageId: id}.Build(), nil
	}
	return pb.ImageGetOrCreateResponse_builder{ImageId: id, Result: pb.GenericResult_builder{
		Status: pb.GenericResult_GENERIC_STATUS_SUCCESS}.Build()}.Build(), nil
}

// ImageJoinStreaming streams a build log line and the build's success.
func (s *Server) ImageJoinStreaming(req *pb.ImageJoinStreamingRequest, stream grpc.ServerStreamingServer[pb.ImageJoinStreamingResponse]) error {
	s.mu.Lock()
	_, ok := s.images[req.GetImageId()]
	s.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "image %s not found", req.GetImageId())
	}
	if err := stream.Send(pb.ImageJoinStreamingResponse_builder{EntryId: "1",
		TaskLogs: []*pb.TaskLogs{pb.TaskLogs_builder{Data: "building " + req.GetImageId() + "\n"}.Build()}}.Build()); err != nil {
		return err
	}
	return stream.Send(pb.ImageJoinStreamingResponse_builder{EntryId: "2", Eof: true,
		Result: pb.GenericResult_builder{Status: pb.GenericResult_GENERIC_STATUS_SUCCESS}.Build()}.Build())
}

// ImageFromId looks an image up by ID (snapshots are used this way).
func (s *Server) ImageFromId(ctx context.Context, req *pb.ImageFromIdRequest) (*pb.ImageFromIdResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.images[req.GetImageId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "Image '%s' not found", req.GetImageId())
	}
	return pb.ImageFromIdResponse_builder{ImageId: req.GetImageId()}.Build(), nil
}

// SandboxCreate is the V1 create (the SDK uses it for GPU sandboxes).
func (s *Server) SandboxCreate(ctx context.Context, req *pb.SandboxCreateRequest) (*pb.SandboxCreateResponse, error) {
	sb, err := s.createSandbox(req.GetAppId(), req.GetDefinition(), nil, req.GetTags(), false)
	if err != nil {
		return nil, err
	}
	return pb.SandboxCreateResponse_builder{SandboxId: sb.id}.Build(), nil
}

// SandboxCreateV2 is the V2 create; it returns the task and router access.
func (s *Server) SandboxCreateV2(ctx context.Context, req *pb.SandboxCreateV2Request) (*pb.SandboxCreateV2Response, error) {
	sb, err := s.createSandbox(req.GetAppId(), req.GetDefinition(), req.GetSecretSources(), req.GetTags(), true)
	if err != nil {
		return nil, err
	}
	jwt := s.issueJWT(sb.taskID)
	return pb.SandboxCreateV2Response_builder{
		SandboxId: sb.id, TaskId: sb.taskID,
		CommandRouterAccess: pb.CommandRouterAccess_builder{Jwt: jwt, Url: s.routerURL()}.Build(),
	}.Build(), nil
}

func (s *Server) issueJWT(taskID string) string {
	jwt := s.newJWT()
	s.mu.Lock()
	s.jwts[jwt] = taskID
	s.mu.Unlock()
	return jwt
}

func (s *Server) createSandbox(appID string, def *pb.Sandbox, sources []*pb.SecretSource, tags []*pb.SandboxTag, v2 bool) (*sandbox, error) {
	if def == nil {
		return nil, status.Error(codes.InvalidArgument, "missing sandbox definition")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, status.Error(codes.Unavailable, "server closed")
	}
	known := false
	for _, id := range s.apps {
		known = known || id == appID
	}
	if !known {
		return nil, status.Errorf(codes.NotFound, "App %s not found", appID)
	}
	im, ok := s.images[def.GetImageId()]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "image %s not found", def.GetImageId())
	}
	prefix := "sb-"
	if v2 {
		prefix = "sb2-"
	}
	sb := &sandbox{
		s: s, id: s.newIDLocked(prefix), taskID: s.newIDLocked("ta-"), app: appID, v2: v2,
		created: time.Now(), tags: map[string]string{}, env: map[string]string{},
		workdir: def.GetWorkdir(), done: make(chan struct{}), execs: map[string]*execProc{},
	}
	for _, ps := range def.GetOpenPorts().GetPorts() {
		sb.ports = append(sb.ports, ps.GetPort())
	}
	rec := CreateRecord{
		SandboxID: sb.id, V2: v2, AppID: appID, ImageID: im.ID, Workdir: def.GetWorkdir(),
		Env: map[string]string{}, TimeoutSecs: def.GetTimeoutSecs(), IdleTimeoutSecs: def.GetIdleTimeoutSecs(),
		MilliCPU: def.GetResources().GetMilliCpu(), MemoryMB: def.GetResources().GetMemoryMb(),
		BlockNetwork:   def.GetNetworkAccess().GetNetworkAccessType() == pb.NetworkAccess_BLOCKED,
		AllowedDomains: def.GetNetworkAccess().GetAllowedDomains(),
		Volumes:        map[string]string{}, Tags: map[string]string{}, Raw: def,
	}
	if g := def.GetResources().GetGpuConfig(); g.GetGpuType() != "" {
		rec.GPU = g.GetGpuType()
		if g.GetCount() > 1 {
			rec.GPU = fmt.Sprintf("%s:%d", g.GetGpuType(), g.GetCount())
		}
	}
	// The image chain, first layer first; a snapshot layer seeds /workspace.
	var snapshot string
	for cur := im; cur != nil; cur = s.images[cur.BaseImageID] {
		rec.ImageChain = append([][]string{cur.DockerfileCommands}, rec.ImageChain...)
		if cur.RegistrySecretID != "" {
			var env map[string]string
			env, rec.RegistrySecretName, _ = s.secretEnvLocked(cur.RegistrySecretID)
			if rec.RegistrySecretName == "" {
				rec.RegistryEnv = maps.Clone(env) // an ephemeral secret (Secrets.FromMap)
			}
		}
		if cur.snapshotDir != "" && snapshot == "" {
			snapshot = cur.snapshotDir
		}
		if cur.BaseImageID == "" {
			break
		}
	}
	addEnv := func(env map[string]string) {
		maps.Copy(sb.env, env)
		maps.Copy(rec.Env, env)
	}
	for _, id := range def.GetSecretIds() {
		env, name, ok := s.secretEnvLocked(id)
		if !ok {
			return nil, status.Errorf(codes.NotFound, "Secret %s not found", id)
		}
		if name != "" {
			rec.SecretNames = append(rec.SecretNames, name)
		}
		addEnv(env)
	}
	for _, src := range sources {
		if src.WhichSource() == pb.SecretSource_SecretId_case {
			env, name, ok := s.secretEnvLocked(src.GetSecretId())
			if !ok {
				return nil, status.Errorf(codes.NotFound, "Secret %s not found", src.GetSecretId())
			}
			if name != "" && !contains(rec.SecretNames, name) {
				rec.SecretNames = append(rec.SecretNames, name)
			}
			addEnv(env)
			continue
		}
		addEnv(src.GetEnv().GetContents())
	}

	root := filepath.Join(s.opts.Dir, "sandboxes", sb.id)
	ws := filepath.Join(root, "workspace")
	if err := mkdirs(filepath.Join(root, "tmp"), filepath.Join(root, "home"), ws); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	_ = os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	binds := []bind{{host: filepath.Join(root, "tmp"), target: "/tmp"}, {host: filepath.Join(root, "home"), target: "/root"}}
	wsBound := false
	for _, m := range def.GetVolumeMounts() {
		v := s.volumeByIDLocked(m.GetVolumeId())
		if v == nil {
			return nil, status.Errorf(codes.NotFound, "Volume %s not found", m.GetVolumeId())
		}
		rec.Volumes[m.GetMountPath()] = v.name
		binds = append(binds, bind{host: v.dir, target: m.GetMountPath(), ro: m.GetReadOnly()})
		wsBound = wsBound || m.GetMountPath() == "/workspace"
	}
	if !wsBound {
		binds = append(binds, bind{host: ws, target: "/workspace"})
		if snapshot != "" {
			if err := copyTree(snapshot, ws); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
		}
	}
	for _, m := range def.GetCloudBucketMounts() {
		bm := BucketMount{Bucket: m.GetBucketName(), MountPath: m.GetMountPath(), KeyPrefix: m.GetKeyPrefix(), ReadOnly: m.GetReadOnly()}
		if id := m.GetCredentialsSecretId(); id != "" {
			_, bm.SecretName, _ = s.secretEnvLocked(id)
		}
		rec.Buckets = append(rec.Buckets, bm)
		dir := filepath.Join(s.BucketDir(bm.Bucket), filepath.FromSlash(bm.KeyPrefix))
		if err := mkdirs(dir); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		binds = append(binds, bind{host: dir, target: bm.MountPath, ro: bm.ReadOnly})
	}
	sort.Slice(binds, func(i, j int) bool { return len(binds[i].target) > len(binds[j].target) })
	sb.binds = binds
	sb.blockNetwork = rec.BlockNetwork
	if sb.workdir != "" {
		if b, rel, ok := sb.resolve(sb.workdir); ok && !b.ro {
			_ = os.MkdirAll(filepath.Join(b.host, rel), 0o755)
		}
	}
	for _, t := range tags {
		sb.tags[t.GetTagName()] = t.GetTagValue()
		rec.Tags[t.GetTagName()] = t.GetTagValue()
	}
	timeout := time.Duration(def.GetTimeoutSecs()) * time.Second
	if timeout <= 0 {
		timeout = 300 * time.Second
	}
	sb.lifetime = time.AfterFunc(timeout, func() { sb.terminate(pb.GenericResult_GENERIC_STATUS_TIMEOUT, "sandbox timed out") })
	if it := def.GetIdleTimeoutSecs(); it > 0 {
		sb.idle = time.Duration(it) * time.Second
		sb.idleTm = time.AfterFunc(sb.idle, func() { sb.terminate(pb.GenericResult_GENERIC_STATUS_TIMEOUT, "sandbox idle timeout") })
	}
	s.sandboxes[sb.id] = sb
	s.tasks[sb.taskID] = sb
	s.creates = append(s.creates, rec)
	return sb, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (s *Server) sandbox(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Sandbox %s not found", id)
	}
	return sb, nil
}

func (s *Server) getTaskID(req *pb.SandboxGetTaskIdRequest) (*pb.SandboxGetTaskIdResponse, error) {
	sb, err := s.sandbox(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	if res := sb.result(); res != nil {
		return pb.SandboxGetTaskIdResponse_builder{TaskResult: res}.Build(), nil
	}
	return pb.SandboxGetTaskIdResponse_builder{TaskId: &sb.taskID}.Build(), nil
}

// SandboxGetTaskId returns the sandbox's task, or its result once finished.
func (s *Server) SandboxGetTaskId(ctx context.Context, req *pb.SandboxGetTaskIdRequest) (*pb.SandboxGetTaskIdResponse, error) {
	return s.getTaskID(req)
}

// SandboxGetTaskIdV2 is SandboxGetTaskId for V2 sandboxes.
func (s *Server) SandboxGetTaskIdV2(ctx context.Context, req *pb.SandboxGetTaskIdRequest) (*pb.SandboxGetTaskIdResponse, error) {
	return s.getTaskID(req)
}

// TaskGetCommandRouterAccess hands out the router URL and a JWT (V1).
func (s *Server) TaskGetCommandRouterAccess(ctx context.Context, req *pb.TaskGetCommandRouterAccessRequest) (*pb.TaskGetCommandRouterAccessResponse, error) {
	s.mu.Lock()
	_, ok := s.tasks[req.GetTaskId()]
	s.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Task %s not found", req.GetTaskId())
	}
	return pb.TaskGetCommandRouterAccessResponse_builder{Jwt: s.issueJWT(req.GetTaskId()), Url: s.routerURL()}.Build(), nil
}

// SandboxGetCommandRouterAccess hands out the router URL and a JWT (V2).
func (s *Server) SandboxGetCommandRouterAccess(ctx context.Context, req *pb.SandboxGetCommandRouterAccessRequest) (*pb.SandboxGetCommandRouterAccessResponse, error) {
	sb, err := s.sandbox(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	return pb.SandboxGetCommandRouterAccessResponse_builder{Jwt: s.issueJWT(sb.taskID), Url: s.routerURL()}.Build(), nil
}

func (s *Server) wait(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	sb, err := s.sandbox(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	if t := req.GetTimeout(); t > 0 {
		tm := time.NewTimer(time.Duration(float64(t) * float64(time.Second)))
		defer tm.Stop()
		select {
		case <-sb.done:
		case <-tm.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-s.closing:
		}
	}
	return pb.SandboxWaitResponse_builder{Result: sb.result(),
		Metadata: pb.SandboxHandleMetadata_builder{AppId: sb.app}.Build()}.Build(), nil
}

// SandboxWait waits up to the request's timeout for the sandbox to finish.
func (s *Server) SandboxWait(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	return s.wait(ctx, req)
}

// SandboxWaitV2 is SandboxWait for V2 sandboxes.
func (s *Server) SandboxWaitV2(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	return s.wait(ctx, req)
}

func (s *Server) terminateRPC(req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	sb, err := s.sandbox(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	existing := sb.result()
	sb.terminate(pb.GenericResult_GENERIC_STATUS_TERMINATED, "terminated")
	return pb.SandboxTerminateResponse_builder{ExistingResult: existing}.Build(), nil
}

// SandboxTerminate stops a sandbox and every process in it.
func (s *Server) SandboxTerminate(ctx context.Context, req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	return s.terminateRPC(req)
}

// SandboxTerminateV2 is SandboxTerminate for V2 sandboxes.
func (s *Server) SandboxTerminateV2(ctx context.Context, req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	return s.terminateRPC(req)
}

func (s *Server) list(req *pb.SandboxListRequest, v2 bool) (*pb.SandboxListResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*sandbox
	for _, sb := range s.sandboxes {
		if !v2 && sb.v2 {
			continue // V1 listing does not know V2 sandboxes
		}
		if req.GetAppId() != "" && sb.app != req.GetAppId() {
			continue
		}
		if !req.GetIncludeFinished() && sb.result() != nil {
			continue
		}
		if b := req.GetBeforeTimestamp(); b != 0 && !(unix(sb.created) < b) {
			continue
		}
		match := true
		for _, t := range req.GetTags() {
			match = match && sb.tags[t.GetTagName()] == t.GetTagValue()
		}
		if match {
			out = append(out, sb)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].created.After(out[j].created) })
	if len(out) > 50 {
		out = out[:50]
	}
	infos := make([]*pb.SandboxInfo, 0, len(out))
	for _, sb := range out {
		var tags []*pb.SandboxTag
		for k, v := range sb.tags {
			tags = append(tags, pb.SandboxTag_builder{TagName: k, TagValue: v}.Build())
		}
		infos = append(infos, pb.SandboxInfo_builder{Id: sb.id, CreatedAt: unix(sb.created), AppId: sb.app, Tags: tags}.Build())
	}
	return pb.SandboxListResponse_builder{Sandboxes: infos}.Build(), nil
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// SandboxList lists running V1 sandboxes, filtered by app and tags.
func (s *Server) SandboxList(ctx context.Context, req *pb.SandboxListRequest) (*pb.SandboxListResponse, error) {
	return s.list(req, false)
}

// SandboxListV2 lists running V1 and V2 sandboxes, filtered by app and tags.
func (s *Server) SandboxListV2(ctx context.Context, req *pb.SandboxListRequest) (*pb.SandboxListResponse, error) {
	return s.list(req, true)
}

func (s *Server) tagsGet(req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	sb, err := s.sandbox(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	var tags []*pb.SandboxTag
	for k, v := range sb.tags {
		tags = append(tags, pb.SandboxTag_builder{TagName: k, TagValue: v}.Build())
	}
	return pb.SandboxTagsGetResponse_builder{Tags: tags}.Build(), nil
}

// SandboxTagsGet returns a sandbox's tags.
func (s *Server) SandboxTagsGet(ctx context.Context, req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	return s.tagsGet(req)
}

// SandboxTagsGetV2 is SandboxTagsGet for V2 sandboxes.
func (s *Server) SandboxTagsGetV2(ctx context.Context, req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	return s.tagsGet(req)
}

// SandboxGetTunnels answers the tunnels of the ports the sandbox
// published at create, at made-up public hosts (nothing here routes to
// them: the tests check what the driver reports).
func (s *Server) SandboxGetTunnels(ctx context.Context, req *pb.SandboxGetTunnelsRequest) (*pb.SandboxGetTunnelsResponse, error) {
	s.mu.Lock()
	sb, ok := s.sandboxes[req.GetSandboxId()]
	s.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Sandbox %s not found", req.GetSandboxId())
	}
	var ts []*pb.TunnelData
	for _, p := range sb.ports {
		ts = append(ts, pb.TunnelData_builder{Host: TunnelHost(sb.id, p), Port: 443, ContainerPort: p}.Build())
	}
	return pb.SandboxGetTunnelsResponse_builder{Tunnels: ts,
		Result: pb.GenericResult_builder{Status: pb.GenericResult_GENERIC_STATUS_SUCCESS}.Build()}.Build(), nil
}

// TunnelHost is the public host the server reports for a sandbox's port.
func TunnelHost(sandboxID string, port uint32) string {
	return fmt.Sprintf("%s-%d.tunnel.modal.test", strings.ToLower(sandboxID), port)
}

// SandboxGetTunnelsV2 is SandboxGetTunnels for V2 sandboxes.
func (s *Server) SandboxGetTunnelsV2(ctx context.Context, req *pb.SandboxGetTunnelsRequest) (*pb.SandboxGetTunnelsResponse, error) {
	return s.SandboxGetTunnels(ctx, req)
}
