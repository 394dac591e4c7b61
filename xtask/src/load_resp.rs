//! A minimal blocking RESP2 client, xtask's one: the benchmark's Redis
//! chores (picking and flushing a database, `INFO memory`, and summing
//! `MEMORY USAGE` over a database's keys, pipelined) and the services'
//! probes of the Redis servers they use or start.

use std::io::{BufRead as _, BufReader, BufWriter, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// One reply.
#[derive(Debug)]
pub(crate) enum Reply {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    pub(crate) fn int(&self) -> Result<i64> {
        match self {
            Self::Int(n) => Ok(*n),
            other => bail!("expected an integer reply, got {other:?}"),
        }
    }

    pub(crate) fn text(&self) -> Result<String> {
        match self {
            Self::Simple(s) => Ok(s.clone()),
            Self::Bulk(Some(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            other => bail!("expected a string reply, got {other:?}"),
        }
    }
}

/// A connection to one Redis server.
#[derive(Debug)]
pub(crate) struct Resp {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Resp {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Self> {
        Self::connect_with_timeout(addr, Duration::from_secs(30))
    }

    /// Connects (within a second); reads and writes time out after `io`.
    pub(crate) fn connect_with_timeout(addr: SocketAddr, io: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .with_context(|| format!("connecting to Redis at {addr}"))?;
        stream.set_read_timeout(Some(io))?;
        stream.set_write_timeout(Some(io))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
        })
    }

    /// Queues a command (sent on the next [`Resp::read`] or [`Resp::cmd`]).
    pub(crate) fn send(&mut self, args: &[&str]) -> Result<()> {
        write!(self.writer, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.writer, "${}\r\n{arg}\r\n", arg.len())?;
        }
        Ok(())
    }

    /// Reads the next reply; a Redis error reply is an error.
    pub(crate) fn read(&mut self) -> Result<Reply> {
        self.writer.flush()?;
        self.read_reply()
    }

    /// One command and its reply.
    pub(crate) fn cmd(&mut self, args: &[&str]) -> Result<Reply> {
        self.send(args)?;
        self.read()
    }

    fn read_reply(&mut self) -> Result<Reply> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end();
        let Some((kind, rest)) = line.split_at_checked(1) else {
            bail!("Redis closed the connection");
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => bail!("Redis replied: {rest}"),
            ":" => Reply::Int(
                rest.parse()
                    .with_context(|| format!("bad integer {rest}"))?,
            ),
            "$" => {
                let len: i64 = rest.parse().with_context(|| format!("bad length {rest}"))?;
                match usize::try_from(len) {
                    Err(_) => Reply::Bulk(None),
                    Ok(len) => {
                        let mut body = vec![0; len + 2];
                        self.reader.read_exact(&mut body)?;
                        body.truncate(len);
                        Reply::Bulk(Some(body))
                    }
                }
            }
            "*" => {
                let len: i64 = rest.parse().with_context(|| format!("bad length {rest}"))?;
                let len = usize::try_from(len).unwrap_or(0);
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.read_reply()?);
                }
                Reply::Array(items)
            }
            _ => bail!("unexpected RESP reply {line:?}"),
        })
    }

    /// `INFO memory`'s `used_memory`, in bytes.
    pub(crate) fn used_memory(&mut self) -> Result<i64> {
        let info = self.cmd(&["INFO", "memory"])?.text()?;
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .context("INFO memory has no used_memory line")?
            .trim()
            .parse()
            .context("used_memory is not a number")
    }

    /// The sum of `MEMORY USAGE` over every key of the selected database,
    /// and the number of keys.
    pub(crate) fn memory_usage_of_db(&mut self) -> Result<(i64, i64)> {
        let mut cursor = "0".to_owned();
        let (mut bytes, mut keys) = (0, 0);
        loop {
            let Reply::Array(mut parts) = self.cmd(&["SCAN", &cursor, "COUNT", "1000"])? else {
                bail!("SCAN did not answer an array");
            };
            let (Some(Reply::Array(batch)), Some(next)) = (parts.pop(), parts.pop()) else {
                bail!("SCAN answered an unexpected shape");
            };
            let names: Vec<String> = batch.iter().map(Reply::text).collect::<Result<_>>()?;
            for name in &names {
                self.send(&["MEMORY", "USAGE", name, "SAMPLES", "0"])?;
            }
            for _ in &names {
                // A key that expired between SCAN and MEMORY USAGE is nil.
                if let Reply::Int(n) = self.read()? {
                    bytes += n;
                    keys += 1;
                }
            }
            cursor = next.text()?;
            if cursor == "0" {
                return Ok((bytes, keys));
            }
        }
    }
}
