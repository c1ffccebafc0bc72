#!/bin/bash
# How tests/data/oracle-milter-record.txt and oracle-milter-log.txt were recorded: the real
# sendmail 8.17.1.9 (Debian) from a copy of the oracle kit (/root/oracle -> /root/oracle-milter,
# its mc/oracle.mc replaced by tests/fixtures/oracle-milter.mc), run as
#   /root/private-devlog.sh bash tests/data/oracle-milter-run.sh
# then: cp run/record.txt tests/data/oracle-milter-record.txt; the Milter lines of run/maillog
# without their syslog prefix -> tests/data/oracle-milter-log.txt. Not run by the tests.
# inside private-devlog: start the test milter, the oracle, send one message, stop.
set -e
cd /root/oracle-milter
RUN=/root/oracle-milter/run
mkdir -p $RUN
rm -f $RUN/test.sock $RUN/record.txt
/usr/bin/python3 /work/wt-milter/tests/data/test_milter.py unix:$RUN/test.sock $RUN/record.txt > $RUN/milter.out 2>&1 &
echo $! > $RUN/milter.pid
for i in $(seq 50); do [ -S $RUN/test.sock ] && break; sleep 0.1; done
QUEUE_INTERVAL= bash run-oracle.sh > $RUN/run.out 2>&1 || { cat $RUN/run.out; }
sleep 1
/usr/bin/python3 - <<'PY'
import smtplib
s = smtplib.SMTP('127.0.0.1', 2526, local_hostname='client.example.test', timeout=30)
s.ehlo()
s.mail('sender@client.example.test', ['SIZE=100'])
print(s.rcpt('someone@remote.example.test'))
print(s.rcpt('alice@oracle.example.test'))
print(s.rcpt('reject@remote.example.test'))
print(s.data(b'From: sender@client.example.test\r\nTo: someone@remote.example.test\r\nSubject: macros\r\nMessage-Id: <macros-1@client.example.test>\r\n\r\nbody\r\n'))
s.quit()
PY
sleep 2
bash stop-oracle.sh > /dev/null 2>&1 || true
kill $(cat $RUN/milter.pid) || true
cat $RUN/record.txt
echo ---
grep -i milter $RUN/maillog | head -40
