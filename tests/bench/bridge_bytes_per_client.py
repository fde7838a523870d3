"""The bridge's bytes_per_client phase alone (what `kitbash bench bridge` measures: the bridge's RSS
growth per connected, subscribed, idle client, 5,000 clients in 4 processes), to compare two
bridge binaries quickly. Usage: tests/bench/bridge_bytes_per_client.py BRIDGE_BIN KITBASH_BIN.
Needs redis-server and redis-cli; uses port 6399."""
import subprocess, sys, time, os, socket
bridge = sys.argv[1]
port = 6399
subprocess.run(["redis-server","--port",str(port),"--save","","--appendonly","no","--daemonize","yes"],check=True)
time.sleep(0.5)
s=socket.socket(); s.bind(("127.0.0.1",0)); lp=s.getsockname()[1]; s.close()
env=dict(os.environ, KITBASH_CONFIG_DIR="/nonexistent", KITBASH__REDIS__URL=f"redis://127.0.0.1:{port}",
         KITBASH__REDIS__NAMESPACE="bpc", KITBASH__ADMIN__LISTEN="", KITBASH__BRIDGE__LISTEN=f"127.0.0.1:{lp}")
env.pop("KITBASH_PROFILE",None)
b=subprocess.Popen([bridge],env=env,stdout=subprocess.DEVNULL,stderr=open("/tmp/bpc-bridge.log","w"))
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
time.sleep(3)
idle=rss(b.pid)
url=f"ws://127.0.0.1:{lp}/connection/websocket"
N=5000; P=4; procs=[]
for p in range(P):
    c=subprocess.Popen([sys.argv[2],"bench-ws-clients","--url",url,"--count",str(N//P),"--symbols","50","--first",str(p*N//P)],stdin=subprocess.PIPE,stdout=subprocess.PIPE,text=True)
    procs.append(c)
for c in procs:
    line=c.stdout.readline()
    assert line.strip()=="ready", line
time.sleep(1)
full=rss(b.pid)
print(f"{bridge}: idle {idle} KiB, with {N} clients {full} KiB, bytes/client {(full-idle)*1024/N:.0f}")
for c in procs: c.kill()
b.terminate(); b.wait()
subprocess.run(["redis-cli","-p",str(port),"shutdown","nosave"])
