cd /root/oracle-defaults
source oracle-env.sh
oracle_prepare_etc
: > run/maillog
busybox syslogd -n -O run/maillog </dev/null >/dev/null 2>&1 &
SL=$!
sleep 0.5
chmod 755 /root /root/oracle-defaults /root/oracle-defaults/run run/mqueue
rm -rf run/mqueue/*
ls -ld run/mqueue
echo "== restrictqrun, nobody, -q"
oracle_ns su nobody -s /bin/sh -c "cd /; $SM -C $CF -q" ; echo "rc=$?"
echo "== public, nobody, -q"
oracle_ns su nobody -s /bin/sh -c "cd /; $SM -C $CF -O PrivacyOptions=public -q" ; echo "rc=$?"
echo "== restrictqrun, nobody, -bp"
oracle_ns su nobody -s /bin/sh -c "cd /; $SM -C $CF -bp" ; echo "rc=$?"
echo "== nobody -f"
chmod 1777 run/mqueue
printf 'Subject: f test\n\nhi\n' | oracle_ns su nobody -s /bin/sh -c "cd /; $SM -C $CF -odq -f forged@client.example.test alice"; echo "rc=$?"
chmod 700 run/mqueue
for f in run/mqueue/qf* run/mqueue/df*; do echo "== $f"; cat $f; done
sleep 1
kill $SL
echo ==== maillog; grep -v "su\[\|pam" run/maillog
