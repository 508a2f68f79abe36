"""
The Docker API's images, networks, volumes, events, disk usage and
registry routes, driven by docker-py against a real daemon (and a real
registry for pull, push and login).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from typing import Any

import docker
from twisted.internet.defer import inlineCallbacks

from ross.testing.daemon import short_tempdir
from ross.testing.dockerapi import DockerAPITestCase
from ross.testing.registry import RegistryServer, free_port


class ImageTests(DockerAPITestCase):
    def daemon_options(self) -> dict[str, Any]:
        base = short_tempdir("ross-reg-")
        self.addCleanup(shutil.rmtree, base, True)
        self.registry = RegistryServer(base, port=free_port())
        return {"insecure_registries": (self.registry.host,)}

    @inlineCallbacks
    def test_list_inspect_tag_remove(self) -> Any:
        """
        Images list, inspect and history in docker's schema; tag answers
        201, remove lists what it untagged and deleted.
        """
        images = yield self.call(self.docker.images)
        self.assertEqual([i["RepoTags"] for i in images], [["busybox:latest"]])
        image_id = images[0]["Id"]
        self.assertTrue(image_id.startswith("sha256:"))
        self.assertGreater(images[0]["Size"], 0)
        inspect = yield self.call(self.docker.inspect_image, "busybox")
        self.assertEqual(inspect["Id"], image_id)
        self.assertEqual(inspect["Os"], "linux")
        self.assertEqual(inspect["RootFS"]["Type"], "layers")
        self.assertEqual(len(inspect["RootFS"]["Layers"]), 1)
        self.assertIn("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", inspect["Config"]["Env"])
        self.assertEqual((inspect["Config"]["Hostname"], inspect["Config"]["Entrypoint"]), ("", []))
        history = yield self.call(self.docker.history, "busybox")
        self.assertEqual(history[0]["Id"], image_id)
        tagged = yield self.call(self.docker.tag, "busybox", "other/name", "v1")
        self.assertTrue(tagged)
        named = yield self.call(self.docker.images, "other/name")
        self.assertEqual(named[0]["RepoTags"], ["other/name:v1"])
        removed = yield self.call(self.docker.remove_image, "other/name:v1")
        self.assertEqual(removed, [{"Untagged": "other/name:v1"}])
        error = yield self.assertFailure(self.call(self.docker.inspect_image, "nosuch"), docker.errors.ImageNotFound)
        self.assertEqual(error.status_code, 404)
        found = yield self.call(self.docker.search, "busybox")
        self.assertEqual(found, [])

    @inlineCallbacks
    def test_save_load_import_commit(self) -> Any:
        """
        An image saved through the API loads back; a tarball imports as a
        one-layer image; a container commits to an image with its changes.
        """

        def save() -> bytes:
            return b"".join(self.docker.get_image("busybox"))

        archive = yield self.call(save)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            self.assertIn("manifest.json", tar.getnames())
        yield self.call(self.docker.remove_image, "busybox")
        loaded = yield self.call(lambda: list(self.docker.load_image(archive)))
        self.assertEqual(loaded, [{"stream": "Loaded image: busybox:latest\n"}])
        bad = yield self.call(lambda: list(self.docker.load_image(b"not an archive")))
        self.assertIn("invalid archive", bad[-1]["error"])
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("hello")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        yield self.call(self.docker.import_image_from_data, buffer.getvalue(), repository="imported", tag="1")
        inspect = yield self.call(self.docker.inspect_image, "imported:1")
        self.assertEqual(inspect["RepoTags"], ["imported:1"])
        created = yield self.call(self.docker.create_container, "busybox", ["sh", "-c", "echo made > /made"])
        yield self.call(self.docker.start, created["Id"])
        yield self.call(self.docker.wait, created["Id"], timeout=30)
        committed = yield self.call(self.docker.commit, created["Id"], "committed", "2",
                                    changes='CMD ["cat", "/made"]')
        inspect = yield self.call(self.docker.inspect_image, "committed:2")
        self.assertEqual(inspect["Id"], committed["Id"])
        self.assertEqual(inspect["Config"]["Cmd"], ["cat", "/made"])
        yield self.call(self.docker.remove_container, created["Id"])

    @inlineCallbacks
    def test_push_pull_login(self) -> Any:
        """
        Push and pull through a real registry stream docker's JSON progress
        (push ends with the digest); a pull of what is not there ends its
        stream with the error; /auth checks the registry.
        """
        yield self.registry.start()
        self.addCleanup(self.registry.stop)
        name = f"{self.registry.host}/bb"
        yield self.call(self.docker.tag, "busybox", name, "1")

        def push() -> list[Any]:
            return list(self.docker.push(name, "1", stream=True, decode=True))

        pushed = yield self.call(push)
        self.assertTrue(pushed[-1]["aux"]["Digest"].startswith("sha256:"))
        self.assertTrue(any(p.get("status") == "Pushed" for p in pushed), pushed)
        yield self.call(self.docker.remove_image, f"{name}:1")

        def pull(tag: str) -> list[Any]:
            return list(self.docker.pull(name, tag, stream=True, decode=True))

        pulled = yield self.call(pull, "1")
        self.assertIn(f"Digest: {pushed[-1]['aux']['Digest']}", [p.get("status") for p in pulled])
        inspect = yield self.call(self.docker.inspect_image, f"{name}:1")
        self.assertIn(f"{name}:1", inspect["RepoTags"])
        missing = yield self.call(pull, "nosuchtag")
        self.assertIn("error", missing[-1])
        login = yield self.call(self.docker.login, "anyone", "secret", registry=self.registry.host)
        self.assertEqual(login["Status"], "Login Succeeded")


class NetworkVolumeTests(DockerAPITestCase):
    @inlineCallbacks
    def test_networks(self) -> Any:
        """
        Networks list (bridge, host and none too), create with IPAM and
        labels, connect and disconnect containers, and are removed and
        pruned, in docker's schema.
        """
        listed = yield self.call(self.docker.networks)
        self.assertEqual(sorted(n["Name"] for n in listed), ["bridge", "host", "none"])
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.243.17.0/24")])
        created = yield self.call(self.docker.create_network, "appnet", ipam=ipam, labels={"team": "a"})
        inspect = yield self.call(self.docker.inspect_network, "appnet")
        self.assertEqual(inspect["Id"], created["Id"])
        self.assertEqual(inspect["IPAM"]["Config"][0]["Subnet"], "10.243.17.0/24")
        self.assertEqual(inspect["Labels"], {"team": "a"})
        found = yield self.call(self.docker.networks, filters={"label": "team=a"})
        self.assertEqual([n["Name"] for n in found], ["appnet"])
        container = yield self.call(self.docker.create_container, "busybox", ["sleep", "60"])
        yield self.call(self.docker.start, container["Id"])
        yield self.call(self.docker.connect_container_to_network, container["Id"], "appnet", aliases=["web"])
        inspect = yield self.call(self.docker.inspect_network, "appnet")
        member = inspect["Containers"][container["Id"]]
        self.assertTrue(member["IPv4Address"].startswith("10.243.17."))
        settings = yield self.call(self.docker.inspect_container, container["Id"])
        self.assertEqual(sorted(settings["NetworkSettings"]["Networks"]), ["appnet", "bridge"])
        yield self.call(self.docker.disconnect_container_from_network, container["Id"], "appnet")
        error = yield self.assertFailure(self.call(self.docker.remove_network, "bridge"), docker.errors.APIError)
        self.assertEqual(error.status_code, 409)
        yield self.call(self.docker.remove_container, container["Id"], force=True)
        pruned = yield self.call(self.docker.prune_networks)
        self.assertEqual(pruned["NetworksDeleted"], ["appnet"])
        host = yield self.call(self.docker.inspect_network, "host")
        self.assertEqual(host["Driver"], "host")

    @inlineCallbacks
    def test_volumes(self) -> Any:
        """
        Volumes create, list with filters, inspect, refuse removal while in
        use (409) and are pruned.
        """
        created = yield self.call(self.docker.create_volume, "data", labels={"kind": "db"})
        self.assertEqual(created["Name"], "data")
        self.assertEqual(created["Driver"], "local")
        listed = yield self.call(self.docker.volumes, filters={"label": "kind=db"})
        self.assertEqual([v["Name"] for v in listed["Volumes"]], ["data"])
        container = yield self.call(self.docker.create_container, "busybox", ["true"],
                                    host_config=self.docker.create_host_config(binds=["data:/data"]))
        error = yield self.assertFailure(self.call(self.docker.remove_volume, "data"), docker.errors.APIError)
        self.assertEqual(error.status_code, 409)
        dangling = yield self.call(self.docker.volumes, filters={"dangling": True})
        self.assertEqual(dangling["Volumes"], [])
        yield self.call(self.docker.remove_container, container["Id"])
        pruned = yield self.call(self.docker.prune_volumes, filters={"all": True})
        self.assertEqual(pruned["VolumesDeleted"], ["data"])
        error = yield self.assertFailure(self.call(self.docker.inspect_volume, "data"), docker.errors.NotFound)
        self.assertEqual(error.status_code, 404)
        # The local driver's options (a compose file's driver_opts).
        opts = {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
        created = yield self.call(self.docker.create_volume, "scratch", driver_opts=opts)
        self.assertEqual(created["Options"], opts)
        error = yield self.assertFailure(self.call(self.docker.create_volume, "bad", driver_opts={"size": "1g"}),
                                         docker.errors.APIError)
        self.assertEqual(error.status_code, 400)
        self.assertIn('invalid option: "size"', error.explanation)
        yield self.call(self.docker.remove_volume, "scratch")
        # Or made by a container's mount (VolumeOptions' DriverConfig).
        mount = docker.types.Mount("/m", "bymount", labels={"k": "v"},
                                   driver_config=docker.types.DriverConfig("local", opts))
        container = yield self.call(self.docker.create_container, "busybox", ["true"],
                                    host_config=self.docker.create_host_config(mounts=[mount]))
        made = yield self.call(self.docker.inspect_volume, "bymount")
        self.assertEqual((made["Options"], made["Labels"]), (opts, {"k": "v"}))
        yield self.call(self.docker.remove_container, container["Id"], v=True)
        yield self.call(self.docker.remove_volume, "bymount")


class SystemStreamTests(DockerAPITestCase):
    @inlineCallbacks
    def test_events(self) -> Any:
        """
        /events replays from since and ends at until, with docker's fields
        and filters.
        """
        since = time.time() - 1
        container = yield self.call(self.docker.create_container, "busybox", ["true"], name="evented",
                                    labels={"project": "p1"})
        other = yield self.call(self.docker.create_container, "busybox", ["true"], labels={"project": "p2"})
        yield self.call(self.docker.remove_container, container["Id"])
        yield self.call(self.docker.remove_container, other["Id"])
        until = time.time() + 1

        def events(**filters: Any) -> list[Any]:
            return list(self.docker.events(since=since, until=until, decode=True, filters=filters))

        found = yield self.call(events, type="container", label="project=p1")
        actions = [(e["Action"], e["Actor"]["ID"]) for e in found]
        self.assertEqual(actions, [("create", container["Id"]), ("destroy", container["Id"])])
        self.assertEqual(found[0]["status"], "create")
        self.assertEqual(found[0]["Actor"]["Attributes"]["name"], "evented")
        self.assertEqual(found[1]["Actor"]["Attributes"]["project"], "p1")
        only = yield self.call(events, event="destroy", container="evented")
        self.assertEqual([e["Action"] for e in only], ["destroy"])
        both = yield self.call(events, type="container", event="create")
        self.assertEqual([e["Actor"]["ID"] for e in both], [container["Id"], other["Id"]])
        everything = yield self.call(events)
        self.assertIn("container", {e["Type"] for e in everything})
        # Ross's own kinds (snapshot) are not docker's: a client that
        # switches on the type must only see those dockerd sends.
        self.assertLessEqual({e["Type"] for e in everything}, {"container", "image", "volume", "network", "daemon"})

    @inlineCallbacks
    def test_disk_usage(self) -> Any:
        """
        /system/df lists the images, containers and volumes with sizes.
        """
        yield self.call(self.docker.create_volume, "sized")
        container = yield self.call(self.docker.create_container, "busybox", ["true"])
        usage = yield self.call(self.docker.df)
        self.assertEqual([i["RepoTags"] for i in usage["Images"]], [["busybox:latest"]])
        self.assertEqual([c["Id"] for c in usage["Containers"]], [container["Id"]])
        self.assertEqual([(v["Name"], v["UsageData"]["RefCount"]) for v in usage["Volumes"]], [("sized", 0)])
        yield self.call(self.docker.remove_container, container["Id"])
        yield self.call(self.docker.remove_volume, "sized")
