# The plot of bench/burst_bench.sh: for each system, arrivals/s, rejections/s and deliveries/s
# to the backend (left axis) and the backlog (right axis) over time, one panel per system, same
# time axis.
#
#   gnuplot -c bench/burst_plot.gp DIR OUT "SYSTEM..." XMAX RATE ARRIVALS DURATION
#
# DIR holds SYSTEM.dat (t arrivals/s deliveries/s backlog rejected/s, from burst_tool.py summary) and
# SYSTEM.title (one line) for every SYSTEM.
dir = ARG1
out = ARG2
systems = ARG3
xmax = ARG4 + 0
rate = ARG5 + 0
arrivals = ARG6 + 0
duration = ARG7 + 0
n = words(systems)

set terminal pngcairo size 1200, 300 * n + 60 font "sans,10"
set output out
set multiplot layout n, 1 title sprintf("Burst of %d req/s for %d s in front of a backend that serves %d req/s", arrivals, duration, rate) font "sans,12"
set xrange [-1:xmax]
set yrange [0:arrivals * 1.15]
set y2range [0:*]
set ytics nomirror
set y2tics
set ylabel "req/s"
set y2label "backlog (requests)"
set key top right horizontal
set grid xtics ytics
set style fill transparent solid 0.25 noborder
do for [i = 1:n] {
  s = word(systems, i)
  f = dir . "/" . s . ".dat"
  set title system("cat " . dir . "/" . s . ".title")
  if (i == n) { set xlabel "seconds since the burst started" } else { unset xlabel }
  plot f using 1:4 axes x1y2 with filledcurves x1 lc rgb "#e0a040" title "backlog", \
       f using 1:2 with lines lw 1.5 lc rgb "#3070c0" title "arrivals/s", \
       f using 1:5 with lines lw 1 lc rgb "#d03030" title "rejected/s", \
       f using 1:3 with lines lw 2 lc rgb "#20a040" title "deliveries/s to the backend", \
       rate with lines dt 2 lc rgb "#808080" title sprintf("%d/s", rate)
}
unset multiplot
