"""EntityService and PipelineService from a grpcio client generated from the repo's .proto files.

Usage: entities.py --target HOST:PORT --token TOKEN --stream NAME [--kick SESSION_ID]

Generates the Python stubs of proto/proto/waveguide/v1/*.proto with grpc_tools.protoc into a
temporary directory, then:

- calls ListEntities without a token (expects UNAUTHENTICATED);
- with `authorization: Bearer TOKEN`: lists every entity of the stream (two per page, following
  next_page_token), finds the viewer sessions, kicks one (--kick, else the first) with
  DestroyEntity, destroys it again (NOT_FOUND), tries to destroy a track (INVALID_ARGUMENT),
  lists the sessions again, and reads the other viewer's flow with PipelineService;

and prints one JSON line with what it saw.
"""

import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(ROOT, "proto", "proto")


def generate(out_dir):
    """Compiles every waveguide.v1 .proto into out_dir and returns the imported modules."""
    protos = sorted(glob.glob(os.path.join(PROTO_ROOT, "waveguide", "v1", "*.proto")))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos],
        check=True,
    )
    sys.path.insert(0, out_dir)
    names = ["entity_pb2", "entity_pb2_grpc", "pipeline_pb2", "pipeline_pb2_grpc"]
    return [importlib.import_module(f"waveguide.v1.{n}") for n in names]


def code(fn, *args, **kwargs):
    """The status code name of a call: OK, or the RpcError's."""
    try:
        fn(*args, **kwargs)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def main(args):
    with tempfile.TemporaryDirectory(prefix="waveguide-pb-") as out_dir:
        entity_pb2, entity_grpc, pipeline_pb2, pipeline_grpc = generate(out_dir)
        auth = [("authorization", f"Bearer {args.token}")]
        kind_name = entity_pb2.EntityKind.Name
        state_name = entity_pb2.EntityState.Name
        role_name = entity_pb2.SessionRole.Name
        out = {"ok": False}
        with grpc.insecure_channel(args.target) as channel:
            entities = entity_grpc.EntityServiceStub(channel)
            pipelines = pipeline_grpc.PipelineServiceStub(channel)
            out["no_token"] = code(entities.ListEntities, entity_pb2.ListEntitiesRequest(), timeout=5)
            out["wrong_token"] = code(
                entities.ListEntities, entity_pb2.ListEntitiesRequest(),
                metadata=[("authorization", "Bearer wrong")], timeout=5)

            def list_all(kind, page_size):
                found, token, pages = [], "", 0
                while True:
                    reply = entities.ListEntities(
                        entity_pb2.ListEntitiesRequest(
                            kind=kind, stream=args.stream, page_size=page_size, page_token=token),
                        metadata=auth, timeout=5)
                    pages += 1
                    found.extend(reply.entities)
                    token = reply.next_page_token
                    if not token or pages > 100:
                        return found, pages

            every, pages = list_all(entity_pb2.ENTITY_KIND_UNSPECIFIED, 2)
            out["pages"] = pages
            out["entities"] = [
                {"kind": kind_name(e.ref.kind), "id": e.ref.id, "state": state_name(e.state),
                 "parent": e.parent.id}
                for e in every
            ]
            out["streams"] = [
                {"name": e.ref.id, "viewers": e.stream.viewers, "publishers": e.stream.publishers,
                 "tracks": [t.id for t in e.stream.info.tracks]}
                for e in every if e.WhichOneof("detail") == "stream"
            ]
            out["tracks"] = [
                {"id": e.ref.id, "codec": e.track.track.codec, "packets": e.track.packets}
                for e in every if e.WhichOneof("detail") == "track"
            ]
            sessions, _ = list_all(entity_pb2.ENTITY_KIND_SESSION, 0)
            out["sessions"] = [
                {"id": e.ref.id, "role": role_name(e.session.role), "stream": e.session.stream,
                 "state": state_name(e.state), "created": e.created_at.seconds}
                for e in sessions
            ]
            viewers = [s["id"] for s in out["sessions"] if s["role"] == "SESSION_ROLE_VIEWER"]
            out["viewers"] = viewers
            kick = args.kick or (viewers[0] if viewers else None)
            if kick is None:
                out["error"] = "no viewer session listed"
                print(json.dumps(out), flush=True)
                return 1
            ref = entity_pb2.EntityRef(kind=entity_pb2.ENTITY_KIND_SESSION, id=kick)
            status = entities.GetEntityStatus(
                entity_pb2.GetEntityStatusRequest(ref=ref), metadata=auth, timeout=5)
            out["kick_status_before"] = state_name(status.entity.state)
            out["kicked"] = kick
            out["destroy"] = code(
                entities.DestroyEntity,
                entity_pb2.DestroyEntityRequest(ref=ref, reason="kicked by entities.py"),
                metadata=auth, timeout=5)
            out["destroy_again"] = code(
                entities.DestroyEntity, entity_pb2.DestroyEntityRequest(ref=ref),
                metadata=auth, timeout=5)
            out["status_after"] = code(
                entities.GetEntityStatus, entity_pb2.GetEntityStatusRequest(ref=ref),
                metadata=auth, timeout=5)
            if out["tracks"]:
                track = entity_pb2.EntityRef(
                    kind=entity_pb2.ENTITY_KIND_TRACK, id=out["tracks"][0]["id"])
                out["destroy_track"] = code(
                    entities.DestroyEntity, entity_pb2.DestroyEntityRequest(ref=track),
                    metadata=auth, timeout=5)
                out["track_status"] = code(
                    entities.GetEntityStatus, entity_pb2.GetEntityStatusRequest(ref=track),
                    metadata=auth, timeout=5)
            stream_ref = entity_pb2.EntityRef(kind=entity_pb2.ENTITY_KIND_STREAM, id=args.stream)
            out["configure_cap"] = code(
                entities.ConfigureEntity,
                entity_pb2.ConfigureEntityRequest(
                    ref=stream_ref, settings=entity_pb2.EntitySettings(max_viewers=5)),
                metadata=auth, timeout=5)
            out["configure_no_cap"] = code(
                entities.ConfigureEntity,
                entity_pb2.ConfigureEntityRequest(
                    ref=stream_ref, settings=entity_pb2.EntitySettings(max_viewers=0)),
                metadata=auth, timeout=5)
            out["relay_flow"] = code(
                pipelines.GetFlowStatus,
                pipeline_pb2.GetFlowStatusRequest(flow_id=f"relay:{args.stream}"),
                metadata=auth, timeout=5)
            after, _ = list_all(entity_pb2.ENTITY_KIND_SESSION, 0)
            out["sessions_after"] = [e.ref.id for e in after]
            out["create_relay"] = code(
                entities.CreateEntity,
                entity_pb2.CreateEntityRequest(relay_pull=entity_pb2.RelayPullSpec(
                    stream="elsewhere", upstream_url="http://127.0.0.1:9/whep/elsewhere")),
                metadata=auth, timeout=5)
            others = [v for v in viewers if v != kick]
            if others:
                flow_id = f"viewer:{others[0]}"
                flow = pipelines.GetFlowStatus(
                    pipeline_pb2.GetFlowStatusRequest(flow_id=flow_id), metadata=auth, timeout=5)
                # RTT needs the viewer's receiver report answering one of our sender reports
                # (each about a second apart): wait for it, bounded.
                deadline = time.monotonic() + 8
                while not flow.flow.HasField("rtt") and time.monotonic() < deadline:
                    time.sleep(0.25)
                    flow = pipelines.GetFlowStatus(
                        pipeline_pb2.GetFlowStatusRequest(flow_id=flow_id), metadata=auth,
                        timeout=5)
                out["other_flow"] = {
                    "id": flow.flow.id,
                    "state": pipeline_pb2.FlowState.Name(flow.flow.state),
                    "bitrate_bps": flow.flow.bitrate_bps,
                    "tracks": len(flow.flow.tracks),
                    "packets": flow.flow.packets,
                    "bytes": flow.flow.bytes,
                    "packets_lost": flow.flow.packets_lost,
                    "rtt_ms": (flow.flow.rtt.seconds * 1000 + flow.flow.rtt.nanos / 1e6)
                    if flow.flow.HasField("rtt") else None,
                }
                out["stop_flow"] = code(
                    pipelines.StopFlow, pipeline_pb2.StopFlowRequest(flow_id=flow_id),
                    metadata=auth, timeout=5)
                stopped = pipelines.GetFlowStatus(
                    pipeline_pb2.GetFlowStatusRequest(flow_id=flow_id), metadata=auth, timeout=5)
                out["stopped_state"] = pipeline_pb2.FlowState.Name(stopped.flow.state)
                out["start_flow"] = code(
                    pipelines.StartFlow, pipeline_pb2.StartFlowRequest(flow_id=flow_id),
                    metadata=auth, timeout=5)
            out["kicked_flow"] = code(
                pipelines.GetFlowStatus, pipeline_pb2.GetFlowStatusRequest(flow_id=f"viewer:{kick}"),
                metadata=auth, timeout=5)
            out["ok"] = True
        print(json.dumps(out), flush=True)
        return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", required=True, help="the edge's gRPC HOST:PORT")
    p.add_argument("--token", required=True, help="the [cluster] token")
    p.add_argument("--stream", required=True, help="the stream whose entities to list")
    p.add_argument("--kick", help="the viewer session to kick (default: the first listed)")
    sys.exit(main(p.parse_args()))
