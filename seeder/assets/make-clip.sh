#!/bin/sh
# Regenerates seeder/assets/clip.ts, the bundled test channel that
# `shoal-seeder --input clip` loops forever as a live stream.
#
# Run once by hand (needs ffmpeg with libx264 and drawtext); the output is
# committed and embedded with include_bytes!, so nothing at build or test
# time needs ffmpeg. Tests in seeder/src/ingest assert the properties below,
# so check them if you change this script.
#
# What the clip is, and why:
# - 8.000 s, 640x360 testsrc2 at 25 fps with a burnt-in clock and frame
#   counter, so a viewer can see that the stream moves and where it is.
# - H.264 baseline (no B-frames, so PTS == DTS and both rise in stream order),
#   a keyframe exactly every 25 frames (1 s): -g/-keyint_min 25 and no scene
#   cut keyframes. x264 repeats SPS/PPS before each IDR, so every 1 s segment
#   decodes on its own.
# - AAC mono 48 kHz sine with a beep every second (hear A/V sync).
# - Why 8 s and not 10 s: the looper shifts every loop by the clip duration,
#   so the audio must also fill exactly that duration or each seam clicks or
#   repeats a timestamp. An AAC frame is 1024 samples (21.33 ms at 48 kHz);
#   8 s is the shortest whole number of 1 s GOPs that is also a whole number
#   of AAC frames (375). The encoder adds one 1024-sample priming frame, so we
#   feed it 374 frames of samples (382976) to get exactly 375 packets = 8 s.
# - About 740 kbit/s total, ~740 KB.
set -eu

out="$(dirname "$0")/clip.ts"
font=/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf

ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=640x360:rate=25:duration=8,drawtext=fontfile=${font}:text='shoal %{pts\:hms} frame %{n}':x=(w-tw)/2:y=h-th-24:fontsize=28:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=6" \
  -f lavfi -i "sine=frequency=440:beep_factor=2:sample_rate=48000,atrim=end_sample=382976" \
  -c:v libx264 -profile:v baseline -preset medium -pix_fmt yuv420p \
  -g 25 -keyint_min 25 -sc_threshold 0 \
  -b:v 600k -maxrate 700k -bufsize 700k \
  -c:a aac -b:a 48k -ac 1 \
  -f mpegts "$out"

ls -l "$out"
