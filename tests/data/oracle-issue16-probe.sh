#!/bin/bash
# probe16.sh: issue 16 items 1, 2, 7 asked of the real sendmail 8.17.1.9 (oracle cf).
# Run: /root/private-devlog.sh bash /root/oracle-relay/probe16.sh > out.txt
D=/root/oracle-relay
cd $D
QUEUE_INTERVAL= bash run-oracle.sh >/dev/null 2>&1 || { echo start failed; tail run/maillog; exit 1; }
T="python3 $D/smtp-transcript.py"
echo "=== item1: RCPT forms from outside (127.0.0.9 -> 127.0.0.1:2526)"
$T -s 127.0.0.9 127.0.0.1 2526 "EHLO client.example.test" "MAIL FROM:<a@client.example.test>" \
 'RCPT TO:<"relaytest@foreign.example.net">' \
 'RCPT TO:<"relaytest@foreign.example.net"@oracle.example.test>' \
 'RCPT TO:<"relaytest"@foreign.example.net>' \
 'RCPT TO:<relaytest%foreign.example.net>' \
 'RCPT TO:<relaytest%foreign.example.net@oracle.example.test>' \
 'RCPT TO:<"relaytest%foreign.example.net">' \
 'RCPT TO:<foreign.example.net!relaytest>' \
 'RCPT TO:<foreign.example.net!relaytest@oracle.example.test>' \
 'RCPT TO:<"foreign.example.net!relaytest">' \
 'RCPT TO:<@oracle.example.test:relaytest@foreign.example.net>' \
 'RCPT TO:<@foreign.example.net:root@oracle.example.test>' \
 'RCPT TO:<@oracle.example.test,@foreign.example.net:relaytest@foreign.example.net>' \
 'RCPT TO:<relaytest@[192.0.2.1]>' \
 'RCPT TO:<relaytest@[IPv6:2001:db8::1]>' \
 'RCPT TO:<root@[127.0.0.1]>' \
 'RCPT TO:<root@[IPv6:::1]>' \
 'RCPT TO:<relaytest@foreign.example.net.>' \
 'RCPT TO:<relaytest@foreign.example.net..>' \
 'RCPT TO:<root@oracle.example.test.>' \
 'RCPT TO:<root@ORACLE.EXAMPLE.TEST>' \
 'RCPT TO:<relaytest@FOREIGN.EXAMPLE.NET>' \
 'RCPT TO:<relaytest\@foreign.example.net>' \
 'RCPT TO:<relaytest\@foreign.example.net@oracle.example.test>' \
 'RCPT TO:<relaytest@foreign.example.net\@oracle.example.test>' \
 'RCPT TO:<relaytest(c)@foreign.example.net>' \
 'RCPT TO:<relaytest@foreign.example.net(c)>' \
 'RCPT TO:<relaytest(@oracle.example.test)@foreign.example.net>' \
 'RCPT TO:<relaytest@foreign.example.net(@oracle.example.test)>' \
 'RCPT TO:<"relaytest@foreign.example.net"(c)>' \
 'RCPT TO:relaytest@foreign.example.net' \
 'RCPT TO:"relaytest@foreign.example.net"' \
 'RCPT TO:Some One <relaytest@foreign.example.net>' \
 'RCPT TO:<relaytest@foreign.example.net@oracle.example.test>' \
 'RCPT TO:<relaytest@oracle.example.test@foreign.example.net>' \
 'RCPT TO:<relaytest@foreign.example.net%oracle.example.test>' \
 'RCPT TO:<"relaytest@foreign.example.net"@[127.0.0.1]>' \
 'RCPT TO:<root@localhost>' \
 'RCPT TO:<root@oracle>' \
 'RCPT TO:<root>' \
 'RCPT TO:<"root">' \
 'RCPT TO:<"root"@oracle.example.test>' \
 'RCPT TO:<\root@oracle.example.test>' \
 'RCPT TO:<nosuchuser>' \
 'RCPT TO:<relaytest@foreign.example.net >' \
 'RCPT TO:< relaytest@foreign.example.net>' \
 'RCPT TO:<relaytest @foreign.example.net>' \
 'RCPT TO:<relaytest@ foreign.example.net>' \
 'RCPT TO:<relaytest@foreign .example.net>' \
 'RAW:RCPT TO:<relaytest@foreign.example.net\xe4>\r\n' \
 'RAW:RCPT TO:<r\xc3\xa9laytest@foreign.example.net>\r\n' \
 'RAW:RCPT TO:<\xc3\xa9@foreign.example.net>\r\n' \
 'RAW:RCPT TO:<"relaytest@foreign.example.net\xe4">\r\n' \
 'RAW:RCPT TO:<relaytest@foreign.example.net\r>\r\n' \
 'RAW:RCPT TO:<"relaytest@foreign.example.net"\r@oracle.example.test>\r\n' \
 'RCPT TO:<relaytest@[127.0.0.1]@foreign.example.net>' \
 'RCPT TO:<relaytest@[foreign.example.net]>' \
 'RCPT TO:<relaytest@[oracle.example.test]>' \
 'RCPT TO:<relaytest@[127.0.0.2]>' \
 'RCPT TO:<relaytest@[127.0.0.1.]>' \
 'RCPT TO:<relaytest@[127.1]>' \
 'RCPT TO:<root@[127.000.000.001]>' \
 'RCPT TO:<root@[IPv6:0:0:0:0:0:0:0:1]>' \
 'RCPT TO:<root@[IPv6:::ffff:127.0.0.1]>' \
 'RCPT TO:<"relaytest@foreign.example.net"@localhost>' \
 'RCPT TO:<relaytest@remote.example.test>' \
 QUIT
echo "=== item2: MAIL FROM syntax, from outside"
for m in '<<probe@example.org>>' '<pro be@example.org>' '<probe@exa mple.org>' '<probe@example..org>' \
         '<probe@[300.1.2.3]>' '<probe@example.org> SIZE=abc' '<probe@example.org>' \
         '<<probe@client.example.test>>' '<pro be@client.example.test>' '<probe@client. example.test>' \
         '<probe@client..example.test>' '<probe@[127.0.0.2]>' '<probe@[300.1.2.3]>' \
         '<probe@client.example.test> SIZE=abc' '<probe@client.example.test> SIZE=' '<probe@client.example.test> SIZE=-1' \
         '<probe@client.example.test> SIZE=1x' '<probe@client.example.test> SIZE=99999999999999999999999' \
         '<probe@client.example.test.>' '<probe@.client.example.test>' '<"pro be"@client.example.test>' \
         '<probe@[IPv6:zz::1]>' '<probe@[1.2.3]>' '<probe@[]>' '<probe@client.example.test..>' \
         '<probe@-client.example.test>' '<probe@client_x.example.test>' '<probe@client.example.test@client.example.test>' \
         '<"probe@client.example.test">' '<probe%x@client.example.test>' '<x!probe@client.example.test>' \
         '<@client.example.test:probe@client.example.test>' '<probe>' '<"|/bin/true"@client.example.test>' \
         '<probe(c)@client.example.test>' '<probe@client.example.test(c)>' '<probe\@x@client.example.test>'; do
  for src in 127.0.0.9 127.0.0.1; do
    echo "--- MAIL FROM:$m  (from $src)"
    $T -s $src 127.0.0.1 2526 "EHLO client.example.test" "MAIL FROM:$m" QUIT | grep -E '^(C: MAIL|S: [0-9]{3} ?.*(Sender|MAIL|SIZE|<|\.\.\.|Syntax))'
  done
done
echo "=== item7: program/file/include recipients (outside 127.0.0.9, then 127.0.0.1)"
for src in 127.0.0.9 127.0.0.1; do
$T -s $src 127.0.0.1 2526 "EHLO client.example.test" "MAIL FROM:<a@client.example.test>" \
 'RCPT TO:<"|/bin/true">' 'RCPT TO:<|/bin/true>' 'RCPT TO:<"|/bin/true"@oracle.example.test>' \
 'RCPT TO:<"/tmp/x16">' 'RCPT TO:</tmp/x16>' 'RCPT TO:<"/tmp/x16"@oracle.example.test>' \
 'RCPT TO:<:include:/etc/passwd>' 'RCPT TO:<":include:/etc/passwd">' 'RCPT TO:<":include:/etc/passwd"@oracle.example.test>' \
 'RCPT TO:<\|/bin/true>' 'RCPT TO:<"\|/bin/true">' 'RCPT TO:<" |/bin/true">' 'RCPT TO:<"\/tmp/x16">' \
 QUIT
done
echo "=== item7: case variants of one mailbox (from 127.0.0.9), one message"
$T -s 127.0.0.9 127.0.0.1 2526 "EHLO client.example.test" "MAIL FROM:<a@client.example.test>" \
 'RCPT TO:<root@oracle.example.test>' 'RCPT TO:<ROOT@oracle.example.test>' 'RCPT TO:<Root@ORACLE.EXAMPLE.TEST>' \
 'RCPT TO:<rOOt@Oracle.Example.Test>' 'RCPT TO:<"root"@oracle.example.test>' 'RCPT TO:<root@oracle.example.test.>' \
 'RCPT TO:<root@[127.0.0.1]>' 'RCPT TO:<root>' 'RCPT TO:<root@localhost>' 'RCPT TO:<alice@oracle.example.test>' 'RCPT TO:<root@oracle.example.test>' \
 'DATA:Subject: dup16\n\ncase variants' QUIT
echo "=== item7: bare CR in MAIL FROM (from 127.0.0.9 and 127.0.0.1), delivered to root"
for src in 127.0.0.9 127.0.0.1; do
$T -s $src 127.0.0.1 2526 "EHLO client.example.test" 'RAW:MAIL FROM:<x\ry@client.example.test>\r\n' \
 'RCPT TO:<root@oracle.example.test>' 'DATA:Subject: cr16\n\nbare cr' QUIT
done
$T -s 127.0.0.1 127.0.0.1 2526 "EHLO client.example.test" 'RAW:MAIL FROM:<x@client.example.test\r>\r\n' 'RAW:MAIL FROM:<"x\ry"@client.example.test>\r\n' 'RAW:MAIL FROM:<x@client\r.example.test>\r\n' QUIT
sleep 3
echo "=== mailboxes"
ls -la run/mail
for f in run/mail/*; do echo "--- $f: $(grep -c '^From ' $f) From-lines"; grep -an -E '^(From |Return-Path:|Subject:|X-Original-To|Delivered-To)' "$f" | cat -A | head -40; done
echo "=== sink"; ls run/sink
echo "=== maillog"
cat -A run/maillog | grep -v -E 'syslogd|kernel' 
bash stop-oracle.sh >/dev/null 2>&1
