import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/shared/errors.js";
import { ProcessRunner } from "../../src/imagebuilder/process-runner.js";
import {
  createRunner,
  NativeRunner,
  UnsandboxedRunner,
  type Workspace,
  type WorkspaceMode,
} from "../../src/imagebuilder/runners/index.js";
import { SANDBOX_ETC_FILES } from "../../src/imagebuilder/runners/native-runner.js";

// A stand-in ImageBuilder whose Makefile probes the sandbox from the inside. Every probe
// prints a marker only when the forbidden thing worked.
const MAKEFILE = `
.SILENT:
read-secret:
	-cat $(SECRET_FILE) && echo READ-SECRET-FILE
	-cat $(SECRET_KEY) && echo READ-SECRET-KEY
	-test -e $(SECRET_FILE) && echo SEES-SECRET-FILE || echo secret-file-hidden
	-ls $(BASE) && echo SEES-BASE || echo base-hidden
write-outside:
	-touch /usr/asu-evil && echo WROTE-USR
	-touch $(BASE)/evil && echo WROTE-BASE
	-touch $(OUTSIDE)/asu-evil && echo WROTE-OUTSIDE
	-echo x >> include/rules.mk && echo WROTE-LINKED-FILE
	-touch include/new && echo WROTE-LINKED-DIR
	-touch staging_dir/host/lib/new && echo WROTE-LINKED-LIB
	-touch $(OTHER_WS)/evil && echo WROTE-OTHER-WS
	-touch $(SECRET_DIR)/evil && echo WROTE-SECRET-DIR
	-test -e $(OTHER_WS) && echo SEES-OTHER-WS || echo other-ws-hidden
	echo rewritten > packages/Packages && echo rewrote-copied-file
	touch /tmp/private && echo wrote-private-tmp
	touch staging_dir/host/.prereq-build && echo wrote-staging
read-host:
	-cat /etc/shadow && echo READ-SHADOW
	-ls /root && echo SEES-ROOT
	-ls /home && echo SEES-HOME
	-ls /var && echo SEES-VAR
	-ls /run && echo SEES-RUN
	-ls /opt && echo SEES-OPT
	-ls $(OUTSIDE) && echo SEES-CHECKOUT
	-ls $(PRIVATE) && echo SEES-PRIVATE
	-touch $(FILES)/x && echo WROTE-FILES
	-rmdir $(BIN_DIR) && echo REMOVED-BIN-DIR
	ls /etc | xargs echo
image:
	mkdir -p $(BIN_DIR)
	echo firmware > $(BIN_DIR)/image.bin
	echo package > dl/pkg-1.ipk
	cat include/rules.mk
read-dl:
	-cat dl/pkg-1.ipk && echo SEES-OTHER-DL
	cat $(FEEDS)/base/Packages
	-touch $(FEEDS)/base/evil && echo WROTE-FEEDS
net:
	-bash -c 'exec 3<>/dev/tcp/127.0.0.1/$(REDIS_PORT)' && echo REACHED-REDIS
	-bash -c 'exec 3<>/dev/tcp/$(HOST_IP)/$(REDIS_PORT)' && echo REACHED-HOST-IP
	-bash -c 'exec 3<>/dev/tcp/169.254.169.254/80' && echo REACHED-METADATA
	-bash -c 'exec 3<>/dev/tcp/10.0.0.1/80' && echo REACHED-PRIVATE
	-bash -c 'exec 3<>/dev/tcp/1.1.1.1/80' && echo REACHED-INTERNET
env:
	umask
	env | sort
	test -e /proc/$(HOSTPID) && echo SEES-HOST-PID || echo no-host-pid
	hostname
sleep:
	sleep 987654 & sleep 987655 & echo started; wait
show:
	cat packages/Packages include/rules.mk
	ls staging_dir/host/lib
litter:
	ln -s $(VICTIM) packages/victim-link
	ln $(VICTIM) packages/victim-hardlink 2>/dev/null || echo no-hardlink
	mkfifo packages/fifo
	truncate -s 50G packages/sparse.bin
	rm packages/Packages
	echo changed >> Makefile
`;

/** An address of this host other than loopback, or loopback when it has none. */
function hostAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal && a.family === "IPv4") return a.address;
  }
  return "127.0.0.1";
}

function alivePidsWithArg(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2)[0];
      if (cmdline.split("\0").includes(marker) && state !== "Z") pids.push(Number(entry));
    } catch {
      // the process went away while we looked
    }
  }
  return pids;
}

describe("build runners", () => {
  let tmp: string;
  let cacheDir: string;
  let base: string;
  let secretDir: string;
  let secretFile: string;
  let secretKey: string;
  const processRunner = new ProcessRunner({ killGraceMs: 500, closeGraceMs: 500 });
  let native: NativeRunner;
  let natives: Record<WorkspaceMode, NativeRunner>;
  const workspaces: Workspace[] = [];

  async function makeArgs(ws: Workspace, target: string, other?: Workspace): Promise<string[]> {
    return [
      "make",
      target,
      `BIN_DIR=${ws.binDir}`,
      `BASE=${base}`,
      `SECRET_DIR=${secretDir}`,
      `SECRET_FILE=${secretFile}`,
      `SECRET_KEY=${secretKey}`,
      `OTHER_WS=${other?.dir ?? "/nonexistent"}`,
      `HOSTPID=${process.pid}`,
      `OUTSIDE=${process.cwd()}`,
      `PRIVATE=${ws.privateDir}`,
      `FILES=${ws.filesDir}`,
      `FEEDS=${ws.feedsDir}`,
      `REDIS_PORT=6379`,
      `HOST_IP=${hostAddress()}`,
    ];
  }

  async function workspace(runner: NativeRunner | UnsandboxedRunner): Promise<Workspace> {
    const ws = await runner.createWorkspace(base, {});
    workspaces.push(ws);
    return ws;
  }

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "asu-runner-"));
    cacheDir = path.join(tmp, "cache");
    base = path.join(cacheDir, "imagebuilders", "23.05.5", "ath79_generic", "rev1", "openwrt-imagebuilder");
    secretDir = path.join(tmp, "etc-asu");
    secretFile = path.join(secretDir, "asu.toml");
    secretKey = path.join(tmp, "signing.key");
    await mkdir(path.join(base, "include"), { recursive: true });
    await mkdir(path.join(base, "scripts"), { recursive: true });
    await mkdir(path.join(base, "packages"), { recursive: true });
    await mkdir(path.join(base, "staging_dir", "host", "lib"), { recursive: true });
    await mkdir(path.join(base, "staging_dir", "host", "bin"), { recursive: true });
    await writeFile(path.join(base, "Makefile"), MAKEFILE);
    await writeFile(path.join(base, "include", "rules.mk"), "original rules\n");
    await writeFile(path.join(base, "scripts", "tool.sh"), "#!/bin/sh\n", { mode: 0o755 });
    await writeFile(path.join(base, "packages", "Packages"), "original index\n");
    await writeFile(path.join(base, "staging_dir", "host", "lib", "libfoo.so"), "lib\n");
    await mkdir(secretDir);
    await writeFile(secretFile, 'redis_url = "redis://:hunter2@localhost"\n');
    await writeFile(secretKey, "untrusted comment: secret\nRWRTOPSECRET\n");
    const hiddenPaths = [cacheDir, secretDir, secretKey];
    native = new NativeRunner({ processRunner, hiddenPaths });
    natives = {
      overlay: new NativeRunner({ processRunner, hiddenPaths, workspaceMode: "overlay" }),
      copy: new NativeRunner({ processRunner, hiddenPaths, workspaceMode: "copy" }),
    };
    process.env.REDIS_URL = "redis://:hunter2@localhost:6379";
  });

  afterAll(async () => {
    delete process.env.REDIS_URL;
    for (const ws of workspaces) await ws.dispose();
    await rm(tmp, { recursive: true, force: true });
  });

  it("has a working bubblewrap on this host", async () => {
    expect(await native.checkSandbox()).toEqual({ ok: true });
  });

  it("uses overlay workspaces here (root, overlayfs), detected once", async () => {
    expect(await native.workspaceMode(cacheDir)).toBe("overlay");
  });

  describe.each(["overlay", "copy"] as const)("NativeRunner, %s workspaces", (mode) => {
    let native: NativeRunner;
    beforeAll(() => {
      native = natives[mode];
    });

    it.runIf(mode === "copy")(
      "builds a workspace: read-only folders hardlinked, the rest copied, dl replaced",
      async () => {
        const ws = await workspace(native);
        expect(path.dirname(ws.root)).toBe(path.join(path.dirname(base), "workspaces"));
        expect(ws.dir).toBe(path.join(ws.root, "ib"));
        expect(ws.readOnlyDirs.sort()).toEqual(
          [
            path.join(ws.dir, "include"),
            path.join(ws.dir, "scripts"),
            path.join(ws.dir, "staging_dir/host/lib"),
          ].sort(),
        );
        const linked = await stat(path.join(ws.dir, "include", "rules.mk"));
        const original = await stat(path.join(base, "include", "rules.mk"));
        expect(linked.ino).toBe(original.ino);
        const copied = await stat(path.join(ws.dir, "packages", "Packages"));
        expect(copied.ino).not.toBe((await stat(path.join(base, "packages", "Packages"))).ino);
        expect((await stat(path.join(ws.dir, "scripts", "tool.sh"))).mode & 0o777).toBe(0o755);
        expect((await stat(path.join(ws.dir, "dl"))).isDirectory()).toBe(true);
      },
    );

    it("cannot read hidden paths: the config folder, the signing key, the shared tree", async () => {
      const ws = await workspace(native);
      const result = await native.run(ws, {
        args: await makeArgs(ws, "read-secret"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result.code).toBe(0);
      expect(result.stdout).toBe("secret-file-hidden\nbase-hidden\n");
      expect(result.stderr).toContain(`cat: ${secretFile}: No such file or directory`);
      // Not mounted at all, rather than mounted and unreadable.
      expect(result.stderr).toContain(`cat: ${secretKey}: No such file or directory`);
      expect(result.stdout + result.stderr).not.toContain("hunter2");
      expect(result.stdout + result.stderr).not.toContain("TOPSECRET");
    });

    it("sees only the system's programs and a minimal /etc: no host secrets, homes, services or worker-only folders", async () => {
      const ws = await workspace(native);
      await writeFile(path.join(ws.privateDir, "staged.sig"), "worker only\n");
      const result = await native.run(ws, {
        args: await makeArgs(ws, "read-host"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result.code).toBe(0);
      expect(result.stdout).not.toMatch(/READ-SHADOW|SEES-|WROTE-FILES|REMOVED-BIN-DIR/);
      expect(result.stderr).toContain("cat: /etc/shadow: No such file or directory");
      expect(result.stderr).toContain(`ls: cannot access '${ws.privateDir}': No such file or directory`);
      expect(result.stderr).toContain(`touch: cannot touch '${ws.filesDir}/x': Read-only file system`);
      const etc = result.stdout.trim().split(" ");
      expect(etc).toEqual(expect.arrayContaining(["passwd", "group"]));
      expect(etc.filter((e) => !SANDBOX_ETC_FILES.includes(`/etc/${e}`))).toEqual([]);
      expect(existsSync(ws.binDir)).toBe(true);
      expect(await readFile(path.join(ws.privateDir, "staged.sig"), "utf8")).toBe("worker only\n");
    });

    it("can write only inside its own workspace; the shared tree and other workspaces stay unchanged", async () => {
      const ws = await workspace(native);
      const other = await workspace(native);
      const result = await native.run(ws, {
        args: await makeArgs(ws, "write-outside", other),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result.code).toBe(0);
      expect(result.stdout).toBe("other-ws-hidden\nrewrote-copied-file\nwrote-private-tmp\nwrote-staging\n");
      expect(result.stderr).toContain("touch: cannot touch '/usr/asu-evil': Read-only file system");
      expect(result.stderr).toContain("include/rules.mk: Read-only file system");
      expect(result.stderr).toContain("touch: cannot touch 'include/new': Read-only file system");
      expect(result.stderr).toContain(
        "touch: cannot touch 'staging_dir/host/lib/new': Read-only file system",
      );
      // The checkout is read-only in the sandbox, or not there at all when it lies under /tmp
      // (the sandbox has a private /tmp), as in a CI clone.
      expect(result.stderr).toMatch(
        new RegExp(
          `touch: cannot touch '${process.cwd().replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/asu-evil': (Read-only file system|No such file or directory)`,
        ),
      );
      expect(existsSync("/usr/asu-evil")).toBe(false);
      expect(existsSync(path.join(process.cwd(), "asu-evil"))).toBe(false);
      expect(existsSync(path.join(base, "evil"))).toBe(false);
      expect(existsSync(path.join(other.dir, "evil"))).toBe(false);
      expect(existsSync(path.join(secretDir, "evil"))).toBe(false);
      expect(existsSync("/tmp/private")).toBe(false);
      expect(await readFile(path.join(base, "include", "rules.mk"), "utf8")).toBe("original rules\n");
      expect(await readFile(path.join(base, "packages", "Packages"), "utf8")).toBe("original index\n");
      // What the other build sees of the file is unchanged.
      const seen = await native.run(other, {
        args: ["make", "-s", "show"],
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(seen.stdout).toBe("original index\noriginal rules\nlibfoo.so\n");
      expect(await readFile(path.join(ws.dir, "packages", "Packages"), "utf8")).toBe("rewritten\n");
      expect(existsSync(path.join(base, "staging_dir", "host", ".prereq-build"))).toBe(false);
      expect(existsSync(path.join(ws.dir, "staging_dir", "host", ".prereq-build"))).toBe(true);
    });

    it("writes images into BIN_DIR; dl/ is private to each build and the staged feeds are read-only", async () => {
      const ws = await workspace(native);
      const result = await native.run(ws, {
        args: await makeArgs(ws, "image"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result).toMatchObject({ code: 0, stdout: "original rules\n", stderr: "" });
      expect(await readFile(path.join(ws.binDir, "image.bin"), "utf8")).toBe("firmware\n");
      expect(await readFile(path.join(ws.dir, "dl", "pkg-1.ipk"), "utf8")).toBe("package\n");
      const second = await workspace(native);
      await mkdir(path.join(second.feedsDir, "base"));
      await writeFile(path.join(second.feedsDir, "base", "Packages"), "Package: staged\n");
      const read = await native.run(second, {
        args: await makeArgs(second, "read-dl"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(read.code).toBe(0);
      expect(read.stdout).toBe("Package: staged\n");
      expect(read.stderr).toContain("Read-only file system");
      expect(existsSync(path.join(second.feedsDir, "base", "evil"))).toBe(false);
    });

    it("has no network: not the host's Redis, its addresses, cloud metadata, private ranges or the internet", async () => {
      const ws = await workspace(native);
      const result = await native.run(ws, {
        args: await makeArgs(ws, "net"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result.code).toBe(0);
      expect(result.stdout).not.toContain("REACHED");
      // 127.0.0.1 is the sandbox's own, empty loopback: Redis on the host's is not there.
      expect(result.stderr).toContain("/dev/tcp/127.0.0.1/6379: Connection refused");
      expect(result.stderr).toContain("/dev/tcp/169.254.169.254/80: Network is unreachable");
      expect(result.stderr).toContain("/dev/tcp/10.0.0.1/80: Network is unreachable");
      expect(result.stderr).toContain("/dev/tcp/1.1.1.1/80: Network is unreachable");
      // Fails at once: there is no interface to wait on.
      expect(result.durationMs).toBeLessThan(10_000);
    });

    it("runs with a clean environment and umask 022 in its own pid namespace", async () => {
      const ws = await workspace(native);
      // OpenWrt's prerequisite check refuses any umask but 022, whatever the server runs with.
      const saved = process.umask(0o077);
      const result = await native
        .run(ws, {
          args: await makeArgs(ws, "env"),
          timeoutMs: 30_000,
          maxOutputBytes: 65536,
        })
        .finally(() => process.umask(saved));
      expect(result.code).toBe(0);
      expect(result.stdout.split("\n")[0]).toBe("0022");
      const lines = result.stdout.trim().split("\n");
      const env = Object.fromEntries(
        lines.filter((l) => l.includes("=")).map((l) => l.split(/=(.*)/s).slice(0, 2)),
      );
      expect(env).toMatchObject({
        PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: "/tmp",
        LANG: "C.UTF-8",
        TMPDIR: "/tmp",
      });
      // Only make's own variables come on top of ours.
      const ours = ["PATH", "HOME", "LANG", "TMPDIR"];
      // make exports its own variables and those given on its command line.
      const fromMake = [
        "PWD",
        "MAKEFLAGS",
        "MAKEOVERRIDES",
        "MAKELEVEL",
        "MFLAGS",
        "MAKE_TERMOUT",
        "MAKE_TERMERR",
      ];
      const fromArgs = (await makeArgs(ws, "env")).slice(2).map((a) => a.split("=")[0]);
      expect(Object.keys(env).filter((k) => ![...ours, ...fromMake, ...fromArgs].includes(k))).toEqual([]);
      expect(result.stdout).not.toContain("REDIS_URL");
      expect(result.stdout).not.toContain("hunter2");
      expect(lines.slice(-2)).toEqual(["no-host-pid", "asu-build"]);
    });

    it("kills make and all its children at the timeout", async () => {
      const ws = await workspace(native);
      const result = await native.run(ws, {
        args: await makeArgs(ws, "sleep"),
        timeoutMs: 1500,
        maxOutputBytes: 65536,
      });
      expect(result.timedOut).toBe(true);
      expect(result.stdout).toBe("started\n");
      expect(result.durationMs).toBeLessThan(5000);
      expect(alivePidsWithArg("987654")).toEqual([]);
      expect(alivePidsWithArg("987655")).toEqual([]);
    });

    it.runIf(mode === "overlay")(
      "overlay: copies nothing of the tree but its top-level files; the build sees all of it, nothing stays mounted",
      async () => {
        const ws = await workspace(native);
        expect(ws.overlay?.lowerDir).toBe(base);
        expect(path.dirname(ws.root)).toBe(path.join(path.dirname(base), "workspaces"));
        // The worker's side of `dir` is the upper layer: the Makefile (a top-level file) and dl/.
        expect(readdirSync(ws.dir).sort()).toEqual(["Makefile", "dl"]);
        expect(ws.readOnlyDirs.sort()).toEqual(
          ["include", "scripts", "staging_dir/host/lib"].map((d) => path.join(ws.dir, d)).sort(),
        );
        const result = await native.run(ws, {
          args: ["make", "-s", "show"],
          timeoutMs: 30_000,
          maxOutputBytes: 65536,
        });
        expect(result).toMatchObject({ code: 0, stdout: "original index\noriginal rules\nlibfoo.so\n" });
        // Mounted in the run's own mount namespace: the host never sees it.
        expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(ws.root);
        expect(readdirSync(ws.dir).sort()).toEqual(["Makefile", "dl"]);
      },
    );

    it("removes what a hostile build leaves (links, FIFOs, a 50 GiB sparse file, deletions) and nothing else", async () => {
      const victim = path.join(tmp, "victim.conf");
      await writeFile(victim, "host file, must stay\n");
      const ws = await workspace(native);
      const result = await native.run(ws, {
        args: ["make", "-s", "litter", `VICTIM=${victim}`],
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result.code).toBe(0);
      await ws.dispose();
      expect(existsSync(ws.root)).toBe(false);
      expect(await readFile(victim, "utf8")).toBe("host file, must stay\n");
      expect(await readFile(path.join(base, "packages", "Packages"), "utf8")).toBe("original index\n");
      expect(await readFile(path.join(base, "Makefile"), "utf8")).toBe(MAKEFILE);
      expect(readdirSync(path.join(base, "packages"))).toEqual(["Packages"]);
    });

    it("disposes a workspace without touching the shared tree", async () => {
      const ws = await workspace(native);
      await ws.dispose();
      await ws.dispose();
      expect(existsSync(ws.root)).toBe(false);
      expect(await readFile(path.join(base, "include", "rules.mk"), "utf8")).toBe("original rules\n");
    });
  });

  describe("UnsandboxedRunner", () => {
    const runner = new UnsandboxedRunner({ processRunner });

    it("runs make in a full copy with a clean environment", async () => {
      const ws = await workspace(runner);
      expect(ws.readOnlyDirs).toEqual([]);
      const linked = await stat(path.join(ws.dir, "include", "rules.mk"));
      expect(linked.ino).not.toBe((await stat(path.join(base, "include", "rules.mk"))).ino);
      const env = await runner.run(ws, {
        args: await makeArgs(ws, "env"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(env.stdout).toContain(`HOME=${path.join(ws.root, "home")}\n`);
      expect(env.stdout).not.toContain("REDIS_URL");
      const image = await runner.run(ws, {
        args: await makeArgs(ws, "image"),
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(image.code).toBe(0);
      expect(await readFile(path.join(ws.binDir, "image.bin"), "utf8")).toBe("firmware\n");
      expect(await readFile(path.join(ws.dir, "dl", "pkg-1.ipk"), "utf8")).toBe("package\n");
    });

    it("kills make and all its children at the timeout", async () => {
      const ws = await workspace(runner);
      const result = await runner.run(ws, {
        args: await makeArgs(ws, "sleep"),
        timeoutMs: 1000,
        maxOutputBytes: 65536,
      });
      expect(result.timedOut).toBe(true);
      expect(alivePidsWithArg("987654")).toEqual([]);
      expect(alivePidsWithArg("987655")).toEqual([]);
    });
  });

  describe("createRunner", () => {
    const warnings: string[] = [];
    const infos: string[] = [];
    const logger = {
      info: (_f: object, msg: string) => infos.push(msg),
      warn: (_f: object, msg: string) => warnings.push(msg),
    };

    it("returns the native runner when bubblewrap works, and says which workspaces builds get", async () => {
      const runner = await createRunner(
        { runner: "native", allow_unsandboxed: false, cache_path: cacheDir },
        { hiddenPaths: [], logger, processRunner },
      );
      expect(runner.kind).toBe("native");
      expect(warnings).toEqual([]);
      expect(infos).toEqual([
        "build runner: bubblewrap sandbox; workspaces are overlays over the shared ImageBuilder (constant cost per build)",
      ]);
    });

    it("falls back to copied workspaces where an overlay cannot be mounted", async () => {
      const runner = new NativeRunner({ processRunner, hiddenPaths: [cacheDir], unsharePath: "/bin/false" });
      expect(await runner.workspaceMode(cacheDir)).toBe("copy");
      expect((await runner.workspaces(cacheDir)).reason).toBe("mounting a test overlay exited 1");
      const ws = await workspace(runner);
      expect(ws.overlay).toBeUndefined();
      expect((await stat(path.join(ws.dir, "include", "rules.mk"))).ino).toBe(
        (await stat(path.join(base, "include", "rules.mk"))).ino,
      );
      const result = await runner.run(ws, {
        args: ["make", "-s", "show"],
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result.stdout).toBe("original index\noriginal rules\nlibfoo.so\n");
    });

    it("refuses to start without a sandbox unless allow_unsandboxed is set", async () => {
      const opts = { hiddenPaths: [], logger, processRunner, bwrapPath: "/nonexistent/bwrap" };
      const err = await createRunner(
        { runner: "native", allow_unsandboxed: false, cache_path: cacheDir },
        opts,
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems).toEqual([
        "runner: the native runner needs a working bubblewrap sandbox, but /nonexistent/bwrap could not be started " +
          "(could not start /nonexistent/bwrap: spawn /nonexistent/bwrap ENOENT). Install bubblewrap " +
          "(and allow unprivileged user namespaces), or set allow_unsandboxed = true to run builds without a sandbox (not recommended)",
      ]);
      const runner = await createRunner(
        { runner: "native", allow_unsandboxed: true, cache_path: cacheDir },
        opts,
      );
      expect(runner).toBeInstanceOf(UnsandboxedRunner);
      expect(warnings).toEqual([
        "bubblewrap sandbox unavailable (/nonexistent/bwrap could not be started (could not start /nonexistent/bwrap: " +
          "spawn /nonexistent/bwrap ENOENT)); allow_unsandboxed is set, so builds run WITHOUT a " +
          "sandbox and can read the server's files and write wherever this user can",
      ]);
    });

    it("reports a failing bwrap with its error output", async () => {
      const failing = new NativeRunner({ processRunner, hiddenPaths: [], bwrapPath: "/bin/false" });
      expect(await failing.checkSandbox()).toEqual({
        ok: false,
        reason: "`/bin/false --ro-bind / / true` exited 1",
      });
    });
  });
});
